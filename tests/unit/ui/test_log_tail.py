"""The Container tab's output tail and result as a terminal and a reader see them: a tqdm bar is one line in
its last state (not one line per update), colours are dropped, other controls and bidi overrides are shown
(`dood.lifecycle.logs.inert`, the task log's neutraliser); the result JSON shows Unicode as Unicode, bidi made visible,
and the page still escapes everything."""

from __future__ import annotations

from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.ui import access, detail, overview, routes
from dood.ui.app import create_app
from dood.ui.every_host import Engines
from dood.ui.reader import LOG_TAIL_LINES, EngineReader
from tests.unit.ui.test_routes import EVIL, EVIL_TASK, AuthManager, FakeApi, User, _entry

BAR = "".join(f"\r{p:3d}%|{'█' * (p // 10):<10}| {p}/100" for p in range(0, 101, 5))
OUTPUT = (
    "epoch 1\n"
    f"{BAR}\n"
    "\x1b[32mINFO\x1b[0m trained\x1b[2J\n"
    "name: abc\u202edcba\n"
    "accuracy 𝐱 = 0.9 café\r\n"  # a tty's CRLF
)


class Logs(FakeApi):
    def __init__(self, entries, output: str):
        super().__init__(entries)
        self.output = output
        self.tails: list[int] = []

    def logs(self, cid, **kwargs):
        self.tails.append(kwargs["tail"])
        return self.output.encode()


def test_the_tail_is_what_a_terminal_shows():
    reader = EngineReader(Logs([], OUTPUT))
    lines = reader.log_tail("c")
    assert lines == [
        "epoch 1",
        "100%|██████████| 100/100",  # the bar's last state, one line
        "INFO trained␛[2J",  # colours dropped, a screen clear shown
        "name: abc<U+202E>dcba",
        "accuracy 𝐱 = 0.9 café",
    ]


def test_a_tail_of_progress_bars_keeps_every_real_line():
    """200 lines asked of Docker (which counts newlines) give 200 lines, however many \\r updates they hold."""
    output = "".join(f"line {i}{BAR}\n" for i in range(LOG_TAIL_LINES))
    api = Logs([], output)
    lines = EngineReader(api).log_tail("c")
    assert api.tails == [LOG_TAIL_LINES] and len(lines) == LOG_TAIL_LINES
    assert all(line.endswith("100%|██████████| 100/100") for line in lines)


def test_result_json_shows_unicode_as_unicode_and_bidi_visible():
    text = detail.result_text({"model": "𝐱-net café", "note": "abc\u202edcba", "odd": "\ud835", "c1": "\x9b2J"})
    assert '"model": "𝐱-net café"' in text and "\\ud835\\udc31" not in text and "\\u00e9" not in text
    assert '"note": "abc<U+202E>dcba"' in text and "\u202e" not in text
    assert '"odd": "<U+D835>"' in text  # a lone surrogate: shown, and the page can still be encoded
    assert '"c1": "<U+009B>2J"' in text
    text.encode("utf-8")


def test_the_container_tab_shows_the_tail_and_result_escaped(monkeypatch):
    api = Logs([_entry("a", "public", "exited")], OUTPUT + EVIL + "\n")
    monkeypatch.setattr(routes, "engines", lambda: Engines({"": EngineReader(api)}))
    monkeypatch.setattr(access, "_auth_manager", lambda: AuthManager())
    monkeypatch.setattr(overview, "task_states", lambda keys: {})
    monkeypatch.setattr(detail, "run_dir_result", lambda name: {"model": "𝐱 café", "evil": EVIL + "\u202e"})
    app = create_app()
    app.dependency_overrides[get_user] = lambda: User()
    page = TestClient(app).get(f"/dags/public/runs/r1/tasks/{EVIL_TASK}/container").text
    tail = page.split('id="log-tail"')[1].split("</pre>")[0]
    assert tail.count("100%|██████████| 100/100") == 1 and " 50%" not in tail and "\r" not in tail
    assert "\x1b" not in tail and "INFO trained␛[2J" in tail and "abc&lt;U+202E&gt;dcba" in tail
    result = page.split('id="result"')[1].split("</pre>")[0]
    assert '"model": "𝐱 café"' in result.replace("&#34;", '"')
    assert "&lt;U+202E&gt;" in result and "\u202e" not in page
    assert EVIL not in page and "&lt;script&gt;" in page
