"""Log lines for journald (priority prefixes) and for terminals (timestamps)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.logsetup import LIBRARIES, setup, syslog_priority


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in LIBRARIES}
    yield
    logging.captureWarnings(False)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def journal_env(path: Path) -> dict[str, str]:
    st = os.stat(path)
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def emit_all(log: logging.Logger) -> None:
    log.debug("debug line device=%s", "m1")
    log.info("poll ok device=%s", "m1")
    log.warning("poll failed device=%s error=%s", "m1", "timeout")
    log.error("uplink down broker=%s", "b:1883")
    log.critical("outbox unusable path=%s", "/x")


def test_journal_stream_gets_priority_prefixes_and_no_timestamps(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    with out.open("w") as stream:
        setup("debug", stream=stream, environ=journal_env(out))
        emit_all(logging.getLogger("edged.test"))
    assert out.read_text().splitlines() == [
        "<7>edged.test: debug line device=m1",
        "<6>edged.test: poll ok device=m1",
        "<4>edged.test: poll failed device=m1 error=timeout",
        "<3>edged.test: uplink down broker=b:1883",
        "<2>edged.test: outbox unusable path=/x",
    ]


def test_traceback_lines_keep_the_priority(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    with out.open("w") as stream:
        setup("info", stream=stream, environ=journal_env(out))
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("edged.test").exception("handler crashed command=%s", "status")
    lines = out.read_text().splitlines()
    assert lines[0] == "<3>edged.test: handler crashed command=status"
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_terminal_gets_iso_timestamps_and_level_names(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    with out.open("w") as stream:
        setup("warning", stream=stream, environ={})
        emit_all(logging.getLogger("edged.test"))
    lines = out.read_text().splitlines()
    assert len(lines) == 3  # debug and info filtered out
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(
        stamp + r" WARNING edged.test: poll failed device=m1 error=timeout", lines[0]
    )
    assert re.fullmatch(stamp + r" ERROR edged.test: uplink down broker=b:1883", lines[1])
    assert not any(line.startswith("<") for line in lines)


def test_journal_stream_of_another_file_is_ignored(tmp_path: Path) -> None:
    # JOURNAL_STREAM inherited from a parent whose stderr was the journal, ours is not.
    other = tmp_path / "other"
    other.write_text("")
    out = tmp_path / "stderr"
    with out.open("w") as stream:
        setup("info", stream=stream, environ=journal_env(other))
        logging.getLogger("edged.test").warning("x=1")
    line = out.read_text().strip()
    assert line.endswith(" WARNING edged.test: x=1")
    assert not line.startswith("<")


def test_real_stderr_of_a_process_under_journal_stream(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    code = (
        "import logging; from edged.logsetup import setup; setup('info'); "
        "logging.getLogger('edged.app').warning('reload refused reason=%s', 'bus changed')"
    )
    with out.open("w") as err:
        env = {**os.environ, **journal_env(out)}
        subprocess.run([sys.executable, "-c", code], stderr=err, env=env, check=True, timeout=60)
    assert out.read_text() == "<4>edged.app: reload refused reason=bus changed\n"


def test_library_chatter_is_quieted_below_debug(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    with out.open("w") as stream:
        setup("info", stream=stream, environ=journal_env(out))
        logging.getLogger("pymodbus.client").info("connected")
        logging.getLogger("pymodbus.client").warning("retrying")
        logging.getLogger("edged.app").info("started")
    assert out.read_text().splitlines() == ["<4>pymodbus.client: retrying", "<6>edged.app: started"]


def test_debug_shows_edged_and_not_the_libraries_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    with out.open("w") as stream:
        setup("debug", stream=stream, environ=journal_env(out))
        logging.getLogger("pymodbus.logging").debug("send: 0x1 0x3")
        logging.getLogger("websockets.server").debug("< TEXT '[2,…]'")
        logging.getLogger("edged.windows").debug("window closed device=m1")
    assert out.read_text().splitlines() == ["<7>edged.windows: window closed device=m1"]

    with out.open("w") as stream:
        setup("info", libraries="debug", stream=stream, environ=journal_env(out))
        logging.getLogger("pymodbus.logging").debug("send: 0x1 0x3")
        logging.getLogger("edged.windows").debug("window closed device=m1")
    assert out.read_text().splitlines() == ["<7>pymodbus.logging: send: 0x1 0x3"]


def test_pymodbus_repeat_marker_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    with out.open("w") as stream:
        setup("info", stream=stream, environ=journal_env(out))
        lib = logging.getLogger("pymodbus.logging")
        lib.warning("No response received after 3 retries")
        lib.warning("Repeating....")
    assert out.read_text().splitlines() == [
        "<4>pymodbus.logging: No response received after 3 retries"
    ]


def test_levels_and_priorities() -> None:
    assert [syslog_priority(n) for n in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup("loud")
