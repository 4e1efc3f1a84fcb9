"""`-c CONFIG` is documented, with its default, on every core subcommand that takes it."""

from __future__ import annotations

import pytest

from edged.cli import main


@pytest.mark.parametrize(
    "command", ["run", "check-config", "status", "reload", "reconnect", "ocpp"]
)
def test_config_option_has_help_and_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "-c CONFIG, --config CONFIG" in out
    assert "(default: /etc/edged/edged.toml)" in out
