"""The web console in a real headless Chromium, against a real `dbward server` running the
example configuration (two approval steps on `app/production`) and a real `dbward agent` on
PostgreSQL (docs/console.md).

The screenshots of docs/console.md are written here, to docs/images/console-*.png.
"""

from __future__ import annotations

import base64
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.integration.agent_process import AgentProcess, wait_until
from tests.integration.console.conftest import DESKTOP
from tests.integration.test_end_to_end import ServerProcess
from tests.integration.test_production_workflow import server  # noqa: F401 - a fixture
from tests.repo import REPO_ROOT

pytestmark = pytest.mark.integration

IMAGES = REPO_ROOT / "docs" / "images"
#: A write with a review finding (a long IN list warns) and a script in a literal.
IDS = ", ".join(str(n) for n in range(7, 7 + 120))
WRITE = f"UPDATE orders SET note = '<script>alert(1)</script>' WHERE id IN ({IDS})"
QUERY = "SELECT id, note, NULLIF(id, id) AS nothing FROM orders ORDER BY id"
DEADLINE = 60.0


def _shot(browser: webdriver.Chrome, name: str) -> None:
    """The whole page, not only the window (capped at 3000 px), as docs/console.md shows it."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    width, height = browser.execute_script(
        "const e = document.documentElement; return [e.clientWidth, e.scrollHeight];"
    )
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 3000), "scale": 1},
        },
    )
    (IMAGES / f"console-{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _until(browser: webdriver.Chrome, what: str, check: Callable[[], bool]) -> None:
    def safe() -> bool:
        try:
            return check()
        except Exception:  # an element swapped out by the live region: look again
            return False

    try:
        wait_until(safe, DEADLINE, what)
    except AssertionError as exc:
        shown = browser.find_element(By.TAG_NAME, "main").text
        raise AssertionError(f"{exc}; {browser.current_url} shows:\n{shown}") from None


def _text(browser: webdriver.Chrome, css: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, css).text


def _sign_in(browser: webdriver.Chrome, base: str, token: str) -> None:
    """With the keyboard only: the token field has focus, Enter submits."""
    browser.get(f"{base}/ui/login")
    field = browser.switch_to.active_element
    assert field.get_attribute("id") == "token"
    field.send_keys(token + Keys.ENTER)
    _until(browser, "the inbox after sign-in", lambda: browser.current_url.endswith("/ui/inbox"))


def _sign_out(browser: webdriver.Chrome) -> None:
    browser.find_element(By.CSS_SELECTOR, "form.signout button").click()
    _until(browser, "the sign-in page", lambda: "/ui/login" in browser.current_url)


def _refused(message: str) -> bool:
    """The console's words for the API's 403 or 404 on another user's request."""
    return message.startswith(("forbidden", "not found"))


def _cookie(browser: webdriver.Chrome) -> dict[str, Any]:
    cookie = browser.get_cookie("dbward_session")
    assert cookie is not None
    return dict(cookie)


def _as_browser(base: str, cookie: dict[str, Any]) -> httpx.Client:
    """An HTTP client carrying the browser's session cookie (for downloads and forgeries)."""
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    client.cookies.set("dbward_session", cookie["value"], path="/ui")
    return client


@pytest.fixture
def orders(pg_database: str) -> Iterator[str]:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note varchar(40))")
        conn.execute("INSERT INTO orders VALUES (7, 'new'), (8, 'new'), (9, NULL)")
    return pg_database


@pytest.fixture
def users(server: ServerProcess) -> dict[str, str]:  # noqa: F811 - the imported fixture
    tokens: dict[str, str] = {}
    with server.client() as admin:
        for user, role in (
            ("rita", "requester"),
            ("alex", "approver"),
            ("dora", "dba"),
            ("sam", "requester"),
        ):
            created = admin.post("/api/users", json={"id": user, "roles": [role]})
            assert created.status_code == 201, created.text
            tokens[user] = created.json()["token"]
    tokens["admin"] = (server.state / "admin-token").read_text().strip()
    return tokens


@pytest.fixture
def agent(tmp_path: Path, server: ServerProcess, orders: str) -> Iterator[AgentProcess]:  # noqa: F811
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    process = AgentProcess(
        agent_dir,
        server.url,
        {"app.production": orders, "app.development": orders},
        poll_wait_ms=20000,
        schema_sync=True,
    )
    process.start_with_token((server.state / "agent-token").read_text().strip())
    wait_until(process.ready.exists, 30, "the agent's readiness probe")
    yield process
    process.signal(signal.SIGTERM)
    process.wait(30)
    process.kill()


def test_a_write_is_requested_approved_in_two_steps_resumed_and_read_in_the_browser(
    browser: webdriver.Chrome,
    server: ServerProcess,  # noqa: F811
    users: dict[str, str],
    agent: AgentProcess,
) -> None:
    base = server.url

    # --- the requester submits a write from the New request page, after a preflight ------
    browser.get(f"{base}/ui/login")
    _shot(browser, "signin")
    _sign_in(browser, base, users["rita"])
    session = _cookie(browser)
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    browser.get(f"{base}/ui/requests/new")
    Select(browser.find_element(By.ID, "database")).select_by_value("app")
    Select(browser.find_element(By.ID, "environment")).select_by_value("production")
    browser.find_element(By.ID, "sql").send_keys(WRITE)
    browser.find_element(By.ID, "reason").send_keys("notes for a refund batch")
    browser.find_element(By.ID, "preflight").click()
    _until(browser, "the preflight report", lambda: bool(_text(browser, "#preflight-report")))
    assert "large_in_list" in _text(browser, "#preflight-report")
    assert browser.find_element(By.ID, "sql").get_attribute("value") == WRITE
    _shot(browser, "new")
    browser.find_element(By.ID, "submit").click()
    _until(browser, "the request page", lambda: "/ui/requests/" in browser.current_url)
    request_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id), browser.current_url
    # The statement's <script> is text on the page, never markup.
    assert "<script>alert(1)</script>" in _text(browser, "#sql")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in browser.page_source
    assert not browser.find_elements(By.XPATH, "//script[contains(., 'alert')]")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check
    assert "pending" in _text(browser, "#request-status")

    # A form posted without its CSRF token is refused, even with a valid session.
    with _as_browser(base, _cookie(browser)) as forged:
        refused = forged.post(f"/ui/requests/{request_id}/cancel", data={"reason": "x"})
        assert refused.status_code == 403, refused.text
        assert "CSRF" in refused.text
    _sign_out(browser)
    # Signing out revoked the session on the server: the old cookie opens nothing.
    with _as_browser(base, session) as replayed:
        after = replayed.get("/ui/inbox")
        assert after.status_code == 303
        assert after.headers["location"].startswith("/ui/login")

    # --- the first approver finds it in the inbox, reads plan and findings, approves ------
    _sign_in(browser, base, users["alex"])
    _until(browser, "the inbox row", lambda: request_id[:8] in _text(browser, "#inbox-table"))
    _until(browser, "the inbox badge", lambda: _text(browser, "#inbox-count") == "1")
    assert "1 waiting for you" in _text(browser, "#inbox-total")
    _shot(browser, "inbox")
    browser.set_window_size(390, 844)
    _shot(browser, "inbox-phone")
    browser.set_window_size(*DESKTOP)
    browser.find_element(By.CSS_SELECTOR, "#inbox-table a.request-link").click()
    _until(browser, "the request page", lambda: request_id in browser.current_url)
    _until(
        browser,
        "the EXPLAIN plan",
        lambda: bool(browser.find_elements(By.CSS_SELECTOR, ".plan-tree .plan-label")),
    )
    assert "large_in_list" in _text(browser, "#findings")
    assert "Step 1 of 2" in _text(browser, "#approval-progress")
    browser.find_element(By.ID, "comment").send_keys("IN list checked")
    browser.find_element(By.ID, "approve").click()
    _until(browser, "step 2 of 2", lambda: "Step 2 of 2" in _text(browser, "#approval-progress"))
    assert "IN list checked" in _text(browser, "#live")
    _shot(browser, "request")

    # The second step is approved elsewhere: the open page follows without a reload.
    browser.execute_script("window.notReloaded = true;")
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {users['dora']}"}, timeout=30
    ) as dora:
        second = dora.post(f"/api/requests/{request_id}/approve", json={"comment": "ok"})
        assert second.status_code == 200, second.text
        assert second.json()["status"] == "approved"
    _until(
        browser, "the live approved state", lambda: "approved" in _text(browser, "#request-status")
    )
    assert browser.execute_script("return window.notReloaded === true;")
    _sign_out(browser)

    # --- a stranger sees neither the request nor its result ------------------------------
    _sign_in(browser, base, users["sam"])
    assert request_id[:8] not in browser.page_source
    browser.get(f"{base}/ui/requests/{request_id}")
    assert _refused(_text(browser, "#error-message"))
    assert "orders" not in browser.page_source
    _sign_out(browser)

    # --- the requester resumes it and reads the result ---------------------------------------
    _sign_in(browser, base, users["rita"])
    browser.get(f"{base}/ui/requests/{request_id}")
    browser.find_element(By.ID, "resume").click()
    _until(browser, "the executed state", lambda: "executed" in _text(browser, "#request-status"))
    browser.find_element(By.ID, "result-link").click()
    _until(browser, "the result page", lambda: "/result" in browser.current_url)
    assert "3 row(s) affected" in _text(browser, "#rows-affected")

    # A query on development runs at once; its result is a table with column types.
    browser.get(f"{base}/ui/requests/new")
    Select(browser.find_element(By.ID, "environment")).select_by_value("development")
    browser.find_element(By.ID, "sql").send_keys(QUERY)
    browser.find_element(By.ID, "submit").click()
    _until(browser, "the executed query", lambda: "executed" in _text(browser, "#request-status"))
    query_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
    browser.find_element(By.ID, "result-link").click()
    _until(browser, "the result table", lambda: bool(browser.find_elements(By.ID, "result-table")))
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#result-table th")]
    assert headers[0].startswith("id") and headers[1].startswith("note")
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#result-table td")]
    assert cells[:3] == ["7", "<script>alert(1)</script>", "NULL"]
    _shot(browser, "result")
    with _as_browser(base, _cookie(browser)) as mine:
        csv = mine.get(f"/ui/requests/{query_id}/result.csv")
        assert csv.status_code == 200
        assert csv.text.splitlines()[:2] == ["id,note,nothing", "7,<script>alert(1)</script>,"]
        exported = mine.get(f"/ui/requests/{query_id}/result.json")
        assert exported.json()["result_data"]["rows"][0]["id"] == 7
    browser.get(f"{base}/ui/requests")
    assert request_id[:8] in _text(browser, "#mine-table")
    _shot(browser, "mine")
    rita_cookie = _cookie(browser)
    _sign_out(browser)

    # The stranger cannot read the result either, through the page or the download.
    _sign_in(browser, base, users["sam"])
    browser.get(f"{base}/ui/requests/{query_id}/result")
    assert _refused(_text(browser, "#error-message"))
    assert "&lt;script" not in browser.page_source
    with _as_browser(base, _cookie(browser)) as stranger:
        assert stranger.get(f"/ui/requests/{query_id}/result.csv").status_code in (403, 404)
    _sign_out(browser)
    with _as_browser(base, rita_cookie) as replayed:
        assert replayed.get("/ui/requests").status_code == 303

    # --- the administrator's audit log and agents ------------------------------------------
    _sign_in(browser, base, users["admin"])
    browser.get(f"{base}/ui/audit?request_id={request_id}")
    assert "chain verified" in _text(browser, "#chain-badge")
    assert "step.approved" in _text(browser, "#audit-table")
    _shot(browser, "audit")
    browser.get(f"{base}/ui/agents")
    _until(browser, "the agent", lambda: "e2e-agent" in _text(browser, "#agents-table"))
    assert "app/production" in _text(browser, "#databases-table")
    _shot(browser, "agents")
