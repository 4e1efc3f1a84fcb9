"""[mqtt] batch: records per MQTT message, checked like every other key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged import config as configmod
from edged.errors import ConfigError
from tests.test_config import BASE, write


def test_batch_defaults_to_100_and_can_be_set(tmp_path: Path) -> None:
    assert configmod.load(write(tmp_path, BASE)).mqtt.batch == 100
    text = BASE.replace("port = 1883\n", "port = 1883\nbatch = 1\n", 1)
    other = tmp_path / "one"
    other.mkdir()
    assert configmod.load(write(other, text)).mqtt.batch == 1


@pytest.mark.parametrize("value", ["0", "1001", '"many"'])
def test_batch_out_of_range_names_file_line_and_key(tmp_path: Path, value: str) -> None:
    text = BASE.replace("port = 1883\n", f"port = 1883\nbatch = {value}\n", 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        configmod.load(path)
    lineno = path.read_text().splitlines().index(f"batch = {value}") + 1
    message = str(err.value)
    assert f"edged.toml:{lineno}:" in message and "mqtt.batch" in message, message
