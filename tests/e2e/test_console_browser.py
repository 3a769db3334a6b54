"""The console at `/console` in a real Chromium (Selenium and Debian's chromium-driver).

One `aether serve` on a migrated SQLite database with two accounts and an extra model
(`sponsor`, added through `AE_MODEL_MODULES` only), and one browser session for the whole
module. Each test drives the generated screens and checks the outcome through the API.
Skips, saying why, when chromium or chromedriver is missing, except under
`AE_TEST_REQUIRE_SERVICES=1` (CI installs both), where it fails.

`CONSOLE_SCREENSHOTS=DIR` saves the main screens as PNG files into DIR (the README's
pictures under docs/console/ come from such a run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import require_services
from tests.e2e.conftest import REPO_ROOT, AetherEnv, aether_env, single_json, sqlite_url

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("console_browser")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PASSWORD = "correct horse battery staple"
WAIT = 20.0
ID = r"[A-Za-z0-9_-]{22}"

SPONSOR_MODULE = '''
"""A sponsor of an event: a model added through AE_MODEL_MODULES, with no console change."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, ModelOptions, PublicIdMixin, TenantMixin, TimestampMixin


class Sponsor(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "sponsor"
    __aether__ = ModelOptions(default_sort=("name",), title="Sponsor")

    event_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("event.id", ondelete="CASCADE"), nullable=False,
        info={"parent": True},
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False, info={"sortable": True})
    tier: Mapped[str | None] = mapped_column(String(16), info={"enum": ["gold", "silver"]})
    amount: Mapped[int | None] = mapped_column(Integer, info={"minimum": 0})
'''

# The sponsor table, made the way `aether makemigrations` + `migrate` would in a project.
CREATE_TABLES = """
import sqlalchemy as sa

from registry.introspect import load_models
from engine.settings import load_settings
from models.base import Base

settings = load_settings(dotenv=None)
load_models(settings.model_modules)
engine = sa.create_engine(settings.database_url.replace("+aiosqlite", ""))
Base.metadata.create_all(engine)
engine.dispose()
"""


def browser_missing() -> str | None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if not missing:
        return None
    return f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)"


@dataclass
class Site:
    """The running server and the principals the tests act as."""

    env: AetherEnv
    url: str
    owner_key: str
    viewer_key: str
    other_key: str

    def api(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"X-API-Key": key or self.owner_key}, timeout=15.0
        )

    def create(self, path: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        with self.api(key) as client:
            response = client.post(f"/v3/crud/{path}", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, path: str, key: str | None = None) -> dict[str, Any]:
        with self.api(key) as client:
            response = client.get(f"/v3/crud/{path}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def event(self, name: str, **extra: Any) -> dict[str, Any]:
        return self.create("event", {"name": name, "starts_at": "2027-05-01T09:00:00Z", **extra})


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module; downloads land in `driver.download_dir`."""
    reason = browser_missing()
    if reason:
        if require_services():
            pytest.fail(reason + " (AE_TEST_REQUIRE_SERVICES=1)", pytrace=False)
        print(reason + "; skipping the console browser tests")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('profile')}",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        browser.download_dir = downloads
        browser.principal = None
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def site(driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-site")
    (root / "console_sponsor.py").write_text(textwrap.dedent(SPONSOR_MODULE))
    with aether_env(
        sqlite_url(root),
        root / "work",
        AE_MODEL_MODULES="models,console_sponsor",
        PYTHONPATH=os.pathsep.join([str(root), str(REPO_ROOT)]),
        AE_RATE_LIMIT="100000/minute",
        AE_LOG_LEVEL="WARNING",
    ) as env:
        env.cli("migrate")
        done = subprocess.run(
            [sys.executable, "-c", CREATE_TABLES],
            cwd=env.workdir,
            env=env.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        owner = single_json(
            env.cli(
                "create-account", "--name", "Alpha", "--slug", "alpha",
                "--owner-email", "owner@alpha.test", "--owner-password", PASSWORD, "--json",
            ).stdout
        )  # fmt: skip
        viewer = env.cli_json(
            "create-api-key", "--account", "alpha", "--name", "viewer", "--role", "viewer"
        )
        other = env.create_account("beta")
        server = env.serve()
        yield Site(env, server.base_url, owner["api_key"], viewer["api_key"], other["api_key"])


# --- browser helpers -------------------------------------------------------------------


def wait_for(driver: Any, check: Callable[[Any], Any], timeout: float = WAIT) -> Any:
    """Poll `check` until it is truthy; an element React replaced meanwhile is polled again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=(StaleElementReferenceException,),
    )
    return wait.until(check)


def find(driver: Any, css: str, timeout: float = WAIT) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return wait_for(driver, ec.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout)


def find_all(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def absent(driver: Any, css: str) -> bool:
    return not find_all(driver, css)


def go(driver: Any, hash_: str) -> None:
    """Navigate inside the signed-in console (a fragment change, no reload)."""
    driver.execute_script("window.location.hash = arguments[0];", hash_)


def current_hash(driver: Any) -> str:
    return str(driver.execute_script("return window.location.hash;"))


def wait_hash(driver: Any, pattern: str) -> re.Match[str]:
    def matched(d: Any) -> re.Match[str] | None:
        return re.fullmatch(pattern, current_hash(d))

    result: re.Match[str] = wait_for(driver, matched)
    return result


def type_into(element: Any, text: str) -> None:
    """Replace an input's text the way a person does (React sees every key)."""
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def choose(element: Any, value: str) -> None:
    """Select the option whose value is `value`, else the one showing it (the form's own
    selects number their options)."""
    from selenium.webdriver.support.ui import Select

    select = Select(element)
    if value in [o.get_attribute("value") for o in select.options]:
        select.select_by_value(value)
    else:
        select.select_by_visible_text(value)


def option_values(element: Any) -> list[str]:
    from selenium.webdriver.support.ui import Select

    return [o.get_attribute("value") for o in Select(element).options]


def shot(driver: Any, name: str, scroll_to: str | None = None) -> None:
    directory = os.environ.get("CONSOLE_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        if scroll_to:
            driver.execute_script(
                "document.querySelector(arguments[0]).scrollIntoView();", scroll_to
            )
        time.sleep(0.3)  # let the last fetch paint
        driver.save_screenshot(str(Path(directory) / f"{name}.png"))


def sign_out(driver: Any, site: Site) -> None:
    driver.get(site.url + "/console/")
    wait_for(driver, lambda d: find_all(d, "button.sign-out") or find_all(d, ".sign-in-form"))
    buttons = find_all(driver, "button.sign-out")
    if buttons:
        buttons[0].click()
    find(driver, ".sign-in-form")
    assert driver.execute_script("return sessionStorage.length;") == 0
    driver.principal = None


def sign_in_with_key(driver: Any, site: Site, key: str) -> None:
    if driver.principal == key:
        return
    sign_out(driver, site)
    find(driver, "button.mode-api-key").click()
    find(driver, "input[name=api_key]").send_keys(key)
    find(driver, "button.sign-in-button").click()
    find(driver, "header.top")
    driver.principal = key


def table_ids(driver: Any, scope: str = "") -> list[str]:
    return [
        row.get_attribute("data-id") for row in find_all(driver, f"{scope} table.rows tbody tr")
    ]


def search_ids(site: Site, type_: str, filter_: dict[str, Any]) -> set[str]:
    with site.api() as client:
        response = client.post(f"/v3/crud/{type_}/search", json={"filter": filter_, "limit": 500})
    assert response.status_code == 200, response.text
    return {row["id"] for row in response.json()["data"]}


# --- the scenarios ---------------------------------------------------------------------


def test_sign_in_with_email_and_password_keeps_the_token_out_of_cookies(
    driver: Any, site: Site
) -> None:
    sign_out(driver, site)
    shot(driver, "sign-in")
    find(driver, "input[name=account]").send_keys("alpha")
    find(driver, "input[name=email]").send_keys("owner@alpha.test")
    find(driver, "input[name=password]").send_keys("not the password at all")
    find(driver, "button.sign-in-button").click()
    assert find(driver, ".problem").get_attribute("data-status") == "401"

    type_into(find(driver, "input[name=password]"), PASSWORD)
    find(driver, "button.sign-in-button").click()
    assert find(driver, "header.top .role").text == "owner"
    driver.principal = "password"
    assert driver.get_cookies() == []
    stored = json.loads(
        driver.execute_script("return sessionStorage.getItem('aether.console.credential');")
    )
    assert stored["kind"] == "bearer" and stored["value"].count(".") == 2
    # The navigation is the tree of types, the extra model included.
    nav = {a.get_attribute("data-type") for a in find_all(driver, "nav.types a.nav-type")}
    assert {"account", "event", "event_session", "file", "user", "sponsor"} <= nav


def test_create_an_event_through_the_generated_form(driver: Any, site: Site) -> None:
    sign_in_with_key(driver, site, site.owner_key)
    go(driver, "#/event")
    find(driver, ".list[data-type=event] a.create").click()
    wait_hash(driver, "#/event/new")
    type_into(find(driver, "#root_name"), "Console Launch")
    choose(find(driver, "#root_status"), "open")
    type_into(find(driver, "#root_starts_at"), "2027-05-01T10:00:00Z")
    type_into(find(driver, "#root_venue"), "Hall 1")
    type_into(find(driver, "#root_capacity"), "120")
    shot(driver, "create-event")
    find(driver, "button.save").click()
    event_id = wait_hash(driver, f"#/event/({ID})").group(1)
    assert find(driver, ".detail .label").text == "Console Launch"

    stored = site.get(f"event/{event_id}")
    assert stored["name"] == "Console Launch" and stored["status"] == "open"
    assert stored["starts_at"] == "2027-05-01T10:00:00Z"
    assert stored["venue"] == "Hall 1" and stored["capacity"] == 120


def test_add_a_session_from_the_event_detail_view(driver: Any, site: Site) -> None:
    event = site.event("Session Host")
    sign_in_with_key(driver, site, site.owner_key)
    go(driver, f"#/event/{event['id']}")
    find(driver, ".tabs a.tab[data-child=event_session]").click()
    wait_hash(driver, f"#/event/{event['id']}/event_session")
    find(driver, ".list[data-type=event_session] a.create").click()
    wait_hash(driver, f"#/event/{event['id']}/event_session/new")
    find(driver, "#root_title")
    assert absent(driver, "#root_event_id")  # the parent comes from the nested URL
    type_into(find(driver, "#root_title"), "Opening keynote")
    type_into(find(driver, "#root_starts_at"), "2027-05-01T09:30:00Z")
    type_into(find(driver, "#root_room"), "A1")
    find(driver, "button.save").click()
    session_id = wait_hash(driver, f"#/event/{event['id']}/event_session/({ID})").group(1)
    assert find(driver, ".detail .label").text == "Opening keynote"
    # The parent shows as a link to the event.
    link = find(driver, "tr[data-field=event_id] a.reference")
    assert link.get_attribute("href").endswith(f"#/event/{event['id']}")

    listed = site.get(f"event/{event['id']}/event_session")["data"]
    assert [(s["id"], s["title"], s["room"]) for s in listed] == [
        (session_id, "Opening keynote", "A1")
    ]


def test_a_reference_is_picked_by_searching_as_you_type(driver: Any, site: Site) -> None:
    wanted = site.event("Picker Gala")
    site.event("Picker Fair")
    sign_in_with_key(driver, site, site.owner_key)
    go(driver, "#/event_session/new")
    find(driver, ".reference-picker[data-ref-type=event] input.reference-search").send_keys(
        "ker ga"
    )
    find(driver, f".reference-option[data-id='{wanted['id']}']")
    labels = [o.text for o in find_all(driver, ".reference-option")]
    assert len(labels) == 1 and labels[0].startswith("Picker Gala"), labels
    find(driver, f".reference-option[data-id='{wanted['id']}']").click()
    assert find(driver, ".reference-picker .chosen-label").text == "Picker Gala"
    type_into(find(driver, "#root_title"), "Picked session")
    type_into(find(driver, "#root_starts_at"), "2027-05-01T11:00:00Z")
    find(driver, "button.save").click()
    session_id = wait_hash(driver, f"#/event_session/({ID})").group(1)
    assert site.get(f"event_session/{session_id}")["event_id"] == wanted["id"]


def test_search_with_two_conditions_and_page_with_the_cursor(driver: Any, site: Site) -> None:
    for n in range(12):
        site.event(f"Sieve Open {n:02}", status="open")
    for n in range(3):
        site.event(f"Sieve Closed {n:02}", status="closed")
    site.event("Unrelated open", status="open")
    expected = search_ids(site, "event", {"name": {"_icontains": "sieve"}, "status": "open"})
    assert len(expected) == 12
    schema = site.get("event/schema")
    operators = schema["x-aether"]["operators"]

    sign_in_with_key(driver, site, site.owner_key)
    go(driver, "#/event")
    find(driver, ".list[data-type=event] table.rows")
    find(driver, "details.filter > summary").click()
    find(driver, ".filter-group button.add-condition").click()
    find(driver, ".filter-group button.add-condition").click()
    first, second = find_all(driver, ".filter-row")
    field_select = first.find_element("css selector", ".filter-field")
    assert set(option_values(field_select)) - {""} == set(operators)
    choose(field_select, "name")
    assert option_values(first.find_element("css selector", ".filter-op")) == operators["name"]
    choose(first.find_element("css selector", ".filter-op"), "_icontains")
    first.find_element("css selector", ".filter-value").send_keys("sieve")
    choose(second.find_element("css selector", ".filter-field"), "status")
    assert option_values(second.find_element("css selector", ".filter-op")) == operators["status"]
    choose(second.find_element("css selector", ".filter-op"), "_eq")
    choose(second.find_element("css selector", ".filter-value"), "open")
    find(driver, "button.apply-filter").click()
    wait_for(driver, lambda d: find(d, ".pager .total").text == "12 in all")

    # Sort by name, show the venue column, then walk the pages with the cursor.
    find(driver, "th[data-field=name] button.sort").click()
    find(driver, "details.columns > summary").click()
    find(driver, "input[name=column-venue]").click()
    find(driver, "th[data-field=venue]")
    by_name = sorted(f"Sieve Open {n:02}" for n in range(12))
    wait_for(
        driver,
        lambda d: [c.text for c in find_all(d, "table.rows td[data-field=name]")] == by_name[:10],
    )
    page_one = table_ids(driver)
    shot(driver, "event-list-filtered")
    assert find(driver, "button.previous").get_attribute("disabled") is not None
    find(driver, "button.next").click()
    wait_for(driver, lambda d: find(d, ".pager .page-number").text == "page 2")
    wait_for(
        driver,
        lambda d: [c.text for c in find_all(d, "table.rows td[data-field=name]")] == by_name[10:],
    )
    page_two = table_ids(driver)
    assert find(driver, "button.next").get_attribute("disabled") is not None
    assert len(page_one) == 10 and len(page_two) == 2
    assert set(page_one) | set(page_two) == expected


def test_a_server_422_shows_under_its_field(driver: Any, site: Site) -> None:
    sign_in_with_key(driver, site, site.owner_key)
    go(driver, "#/event/new")
    # The schema's own rules are checked in the page first (no eval: the policy forbids it).
    type_into(find(driver, "#root_code"), "not a code!")
    find(driver, "button.save").click()
    assert "is required" in find(driver, "#root_name__error").text
    assert "pattern" in find(driver, "#root_code__error").text
    type_into(find(driver, "#root_code"), "BACK-1")
    type_into(find(driver, "#root_name"), "Backwards")
    type_into(find(driver, "#root_starts_at"), "2027-06-02T10:00:00Z")
    type_into(find(driver, "#root_ends_at"), "2027-06-01T10:00:00Z")  # a server-side rule
    find(driver, "button.save").click()
    error = find(driver, "#root_ends_at__error")
    assert "must not be earlier than starts_at" in error.text
    assert absent(driver, "#root_name__error") and absent(driver, "#root_starts_at__error")
    assert current_hash(driver) == "#/event/new"
    shot(driver, "create-event-422")
    assert search_ids(site, "event", {"name": "Backwards"}) == set()


def test_an_edit_racing_another_gets_the_412_screen(driver: Any, site: Site) -> None:
    event = site.event("Race Day", venue="Old hall", capacity=10)
    sign_in_with_key(driver, site, site.owner_key)
    go(driver, f"#/event/{event['id']}/edit")
    wait_for(driver, lambda d: find(d, "#root_venue").get_attribute("value") == "Old hall")
    with site.api() as client:  # someone else saves first
        response = client.patch(f"/v3/crud/event/{event['id']}", json={"venue": "Their hall"})
        assert response.status_code == 200 and response.json()["version"] == 2
    type_into(find(driver, "#root_venue"), "My hall")
    find(driver, "button.save").click()
    find(driver, ".conflict")
    assert find(driver, ".conflict tr[data-field=venue] td.mine").text == "My hall"
    assert find(driver, ".conflict tr[data-field=venue] td.theirs").text == "Their hall"
    shot(driver, "edit-conflict-412")
    find(driver, "button.overwrite").click()
    wait_hash(driver, f"#/event/{event['id']}")
    stored = site.get(f"event/{event['id']}")
    assert stored["venue"] == "My hall" and stored["version"] == 3

    # Again, and this time take theirs: the form reloads with the server's values.
    go(driver, f"#/event/{event['id']}/edit")
    wait_for(driver, lambda d: find(d, "#root_venue").get_attribute("value") == "My hall")
    with site.api() as client:
        assert client.patch(f"/v3/crud/event/{event['id']}", json={"capacity": 99}).is_success
    type_into(find(driver, "#root_venue"), "Lost edit")
    find(driver, "button.save").click()
    find(driver, ".conflict")
    assert find(driver, ".conflict tr[data-field=capacity] td.theirs").text == "99"
    find(driver, "button.reload").click()
    wait_for(driver, lambda d: find(d, "#root_capacity").get_attribute("value") == "99")
    assert find(driver, "#root_venue").get_attribute("value") == "My hall"
    assert site.get(f"event/{event['id']}")["version"] == 4


def test_upload_two_files_and_download_one(driver: Any, site: Site, tmp_path: Path) -> None:
    event = site.event("Upload Fest")
    first, second = tmp_path / "agenda.txt", tmp_path / "floor-plan.csv"
    first.write_text("the agenda\n")
    second.write_bytes(b"room,seats\nA1,40\nB2," + os.urandom(8).hex().encode() + b"\n")
    sign_in_with_key(driver, site, site.owner_key)
    go(driver, f"#/event/{event['id']}")
    find(driver, ".files .dropzone")
    driver.find_element("css selector", ".files input.file-input").send_keys(f"{first}\n{second}")
    wait_for(
        driver,
        lambda d: (
            sorted(c.text for c in find_all(d, ".file-list td.file-name"))
            == ["agenda.txt", "floor-plan.csv"]
        ),
    )
    shot(driver, "event-detail-files")
    row = next(r for r in find_all(driver, ".file-list tr") if "floor-plan.csv" in r.text)
    row.find_element("css selector", "button.download").click()
    target = driver.download_dir / "floor-plan.csv"
    wait_for(driver, lambda d: target.is_file() and target.read_bytes() == second.read_bytes())

    # A file dropped on the zone goes up the same way (a drop event carrying a File).
    driver.execute_script(
        """
        const data = new DataTransfer();
        data.items.add(new File(["dropped by drag and drop\\n"], "dropped.txt",
                                {type: "text/plain"}));
        const zone = document.querySelector(".files .dropzone");
        zone.dispatchEvent(new DragEvent("dragover", {bubbles: true, cancelable: true,
                                                      dataTransfer: data}));
        zone.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true,
                                                  dataTransfer: data}));
        """
    )
    wait_for(driver, lambda d: len(find_all(d, ".file-list td.file-name")) == 3)

    linked = site.get(f"event/{event['id']}/event_file?include=file")["data"]
    assert sorted(link["file"]["name"] for link in linked) == [
        "agenda.txt",
        "dropped.txt",
        "floor-plan.csv",
    ]
    dropped = next(link["file"] for link in linked if link["file"]["name"] == "dropped.txt")
    assert dropped["size"] == len(b"dropped by drag and drop\n")


def test_a_viewer_sees_no_write_buttons(driver: Any, site: Site) -> None:
    event = site.event("Viewer Visible")
    sign_in_with_key(driver, site, site.viewer_key)
    assert find(driver, "header.top .role").text == "viewer"
    go(driver, "#/event")
    find(driver, f".list[data-type=event] tr[data-id='{event['id']}']", timeout=WAIT)
    assert absent(driver, "a.create")
    go(driver, f"#/event/{event['id']}/event_session")
    find(driver, ".list[data-type=event_session] table.rows")
    shot(driver, "viewer-event-detail", scroll_to=".files")
    for css in ("a.create", "a.edit", "button.delete", ".dropzone", "input.file-input"):
        assert absent(driver, css), css
    # The server still decides: the same credential, sent by the page, is refused a write.
    status = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch('/v3/crud/event', {method: 'POST', headers: {'X-API-Key': arguments[0],
              'Content-Type': 'application/json'}, body: JSON.stringify({name: 'Nope',
              starts_at: '2027-01-01T00:00:00Z'})}).then(r => done(r.status));
        """,
        site.viewer_key,
    )
    assert status == 403


def test_another_accounts_ids_are_not_reachable(driver: Any, site: Site) -> None:
    theirs = site.create(
        "event", {"name": "Beta Secret", "starts_at": "2027-01-01T00:00:00Z"}, site.other_key
    )
    sign_in_with_key(driver, site, site.owner_key)
    for hash_ in (f"#/event/{theirs['id']}", f"#/event/{theirs['id']}/event_session"):
        go(driver, hash_)
        assert find(driver, ".detail.missing .problem").get_attribute("data-status") == "404"
        assert "Beta Secret" not in driver.page_source
    go(driver, f"#/event/{theirs['id']}/edit")
    assert find(driver, ".form-view .problem").get_attribute("data-status") == "404"
    assert absent(driver, "button.save")


def test_a_model_added_through_model_modules_appears(driver: Any, site: Site) -> None:
    event = site.event("Sponsored Evening")
    sign_in_with_key(driver, site, site.owner_key)
    find(driver, "nav.types a.nav-type[data-type=sponsor]")
    go(driver, f"#/event/{event['id']}")
    find(driver, ".tabs a.tab[data-child=sponsor]").click()
    find(driver, ".list[data-type=sponsor] a.create").click()
    type_into(find(driver, "#root_name"), "Acme")
    choose(find(driver, "#root_tier"), "gold")
    type_into(find(driver, "#root_amount"), "500")
    find(driver, "button.save").click()
    sponsor_id = wait_hash(driver, f"#/event/{event['id']}/sponsor/({ID})").group(1)
    go(driver, f"#/event/{event['id']}/sponsor")
    find(driver, f".list[data-type=sponsor] tr[data-id='{sponsor_id}']")
    shot(driver, "new-model-tab", scroll_to=".children")
    stored = site.get(f"event/{event['id']}/sponsor/{sponsor_id}")
    assert (stored["name"], stored["tier"], stored["amount"]) == ("Acme", "gold", 500)


def test_a_revoked_key_sends_the_console_back_to_sign_in(driver: Any, site: Site) -> None:
    made = site.env.cli_json(
        "create-api-key", "--account", "alpha", "--name", "short-lived", "--role", "editor"
    )
    sign_in_with_key(driver, site, made["api_key"])
    assert find(driver, "header.top .role").text == "editor"
    with site.api() as client:
        assert client.delete(f"/v3/crud/api_key/{made['id']}").status_code == 204
    go(driver, "#/event")
    assert "sign in again" in find(driver, ".sign-in .notice").text
    driver.principal = None
    assert driver.execute_script("return sessionStorage.length;") == 0
