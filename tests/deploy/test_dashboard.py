"""The dashboard (/ui) in a real browser: Debian chromium + chromium-driver, driven headless by Selenium.

- in process: the Ingress app (real SQLite registry, router/gateway doubles) behind uvicorn on loopback;
- through the real `coe up` service (the `service` fixture): sign in, disable an expert, playground.

A screenshot of every page lands in the test's tmp dir (`dashboard-*.png`)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from registry import Registry
from registry import repository as repo
from tests.deploy.conftest import Service
from tests.deploy.doubles import FakeGateway, FakeRouter
from tests.deploy.live import serve_app

pytestmark = pytest.mark.browser

TABS = ("experts", "categories", "keys", "decisions", "charts", "playground")


def _binaries() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("chromium / chromedriver not installed (scripts/ensure-browser.sh installs them)")
    return chrome, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    chrome, driver = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=DriverService(executable_path=driver), options=options)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def wait(drv: Any, check: Any, timeout: float = 30) -> Any:
    """Until `check` holds; an element the page re-rendered meanwhile (it polls every 2 s) is looked up
    again on the next poll instead of failing the wait."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        drv, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: check(d))


def css(drv: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(drv.find_elements(By.CSS_SELECTOR, selector))


def text_of(drv: Any, selector: str) -> str:
    found = css(drv, selector)
    return str(found[0].text) if found else ""


def tab(drv: Any, name: str) -> None:
    css(drv, f'#tabs button[data-tab="{name}"]')[0].click()
    wait(drv, lambda d: not css(d, f"#tab-{name}")[0].get_attribute("hidden"))


def shoot(drv: Any, out: Path, name: str) -> Path:
    path = out / f"dashboard-{name}.png"
    drv.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def sign_in_by_url(drv: Any, base: str, key: str) -> None:
    drv.get(f"{base}/ui?key={key}")
    wait(drv, lambda d: "signed in" in text_of(d, "#signed-in-as"))
    assert "key=" not in drv.current_url  # removed from the address bar
    assert drv.execute_script("return sessionStorage.getItem('coe-admin-key')") == key


def disable_in_ui(drv: Any, expert: str) -> None:
    tab(drv, "experts")
    row = f'#experts-table tr[data-expert="{expert}"]'
    wait(drv, lambda d: css(d, row))
    css(drv, f"{row} button.toggle")[0].click()
    wait(drv, lambda d: text_of(d, f"{row} td.enabled") == "disabled")


def run_playground(drv: Any, text: str) -> None:
    tab(drv, "playground")
    box = css(drv, "#pg-text")[0]
    box.clear()
    box.send_keys(text)
    css(drv, "#pg-run")[0].click()
    wait(drv, lambda d: css(d, "#pg-table tr[data-policy]"))


# ----- in process ---------------------------------------------------------------------------------


@pytest.fixture
def registry(sqlite_db_url: str) -> Iterator[Registry]:
    with Registry(sqlite_db_url) as reg:
        with reg.session() as s:
            for name, tags in (
                ("math", []),
                ("general", ["generalist"]),
                ("local-code-assistant-long-name", []),
            ):
                repo.add_expert(
                    s,
                    name=name,
                    base_url="http://127.0.0.1:9/v1",
                    model=f"{name}-model",
                    tags=tags,
                    cost_input_per_m=1.0,
                    cost_output_per_m=2.0,
                )
            repo.add_category(s, name="math", description="arithmetic, algebra")
            repo.map_expert(s, category="math", expert="math", rank=1)
            repo.map_expert(s, category="math", expert="general", rank=2)
            repo.add_category(s, name="other")
            repo.map_expert(s, category="other", expert="general", rank=1)
        yield reg


@pytest.fixture
def live(registry: Registry, tmp_path: Path) -> Iterator[str]:
    settings = Settings(database_url=registry.url, data_dir=tmp_path, cache="exact")
    ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=registry, key_ttl_s=0)
    with serve_app(ingress.build_asgi_app()) as base:
        yield base


def test_dashboard_in_process(browser: Any, live: str, registry: Registry, tmp_path: Path) -> None:
    import httpx

    with registry.session() as s:
        _, key = repo.create_api_key(s, scopes=["admin", "query"], name="ops")

    def send() -> None:
        r = httpx.post(
            f"{live}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}]},
        )
        assert r.status_code == 200, r.text

    for _ in range(3):  # some traffic for the decisions
        send()

    # a wrong key is refused with the API's message
    browser.get(f"{live}/ui")
    css(browser, "#key-input")[0].send_keys("coe_000000000000_wrongwrongwrongwrongwrong")
    css(browser, "#sign-in")[0].click()
    wait(browser, lambda d: "invalid API key" in text_of(d, "#error"))
    shoot(browser, tmp_path, "signed-out")

    sign_in_by_url(browser, live, key)
    wait(browser, lambda d: len(css(d, "#experts-table tbody tr")) == 3)
    assert "local-code-assistant-long-name" in text_of(browser, "#experts-table")
    shoot(browser, tmp_path, "experts")

    disable_in_ui(browser, "math")
    with registry.session(write=False) as s:
        assert repo.get_expert(s, name="math").enabled is False

    tab(browser, "categories")
    wait(browser, lambda d: css(d, '.card[data-category="math"] tr[data-expert="general"] input.rank'))
    rank = css(browser, '.card[data-category="math"] tr[data-expert="general"] input.rank')[0]
    rank.clear()
    rank.send_keys("3\n")
    wait(browser, lambda d: dict(registry_map(registry, "math")).get("general") == 3)
    shoot(browser, tmp_path, "categories")

    tab(browser, "keys")
    wait(browser, lambda d: css(d, "#keys-table tbody tr"))
    css(browser, "#key-name")[0].send_keys("ci-bot")
    css(browser, "#key-form button")[0].click()
    wait(browser, lambda d: text_of(d, "#new-key-value").startswith("coe_"))
    shoot(browser, tmp_path, "keys")

    tab(browser, "decisions")
    wait(browser, lambda d: "What is 2+2?" in text_of(d, "#decisions-table"))
    shoot(browser, tmp_path, "decisions")

    tab(browser, "charts")
    for _ in range(4):  # traffic while the page samples, so the rates are not zero
        send()
    traffic = "#charts figure:first-child svg"
    wait(browser, lambda d: float(css(d, traffic)[0].get_attribute("data-max") or 0) > 0, timeout=30)
    shoot(browser, tmp_path, "charts")

    run_playground(browser, "What is the derivative of x^3?")
    result = text_of(browser, "#pg-result")
    assert "math" in result and "0.800" in result
    from router.policies import POLICIES

    assert {r.get_attribute("data-policy") for r in css(browser, "#pg-table tr[data-policy]")} == set(
        POLICIES
    )
    css(browser, "#pg-send")[0].click()
    wait(browser, lambda d: text_of(d, "#pg-answer-text") == "four")
    shoot(browser, tmp_path, "playground")
    print(f"screenshots in {tmp_path}")


def registry_map(registry: Registry, category: str) -> tuple[tuple[str, int], ...]:
    with registry.session(write=False) as s:
        return repo.get_category(s, name=category).experts


# ----- through the real service -------------------------------------------------------------------


@pytest.mark.serve
@pytest.mark.slow
def test_dashboard_through_coe_up(browser: Any, service: Service, tmp_path: Path) -> None:
    reg = Registry(service.database_url)
    # Creating a key would close the service for the rest of the session (revoked keys count), so
    # while none exists sign in through the open loopback mode; otherwise with a fresh admin key.
    rec = None
    try:
        if reg.has_api_keys():
            with reg.session() as s:
                rec, key = repo.create_api_key(s, scopes=["admin", "query"], name="dashboard-e2e")
            sign_in_by_url(browser, service.base, key)
        else:
            browser.get(f"{service.base}/ui")
            wait(browser, lambda d: "open" in text_of(d, "#signed-in-as"), timeout=60)
        wait(browser, lambda d: "local-general" in text_of(d, "#experts-table"), timeout=60)
        wait(
            browser,
            lambda d: "healthy" in text_of(d, '#experts-table tr[data-expert="local-code"]'),
            timeout=60,
        )
        shoot(browser, tmp_path, f"service-experts-{service.topology}")

        disable_in_ui(browser, "local-code")
        with reg.session(write=False) as s:
            assert repo.get_expert(s, name="local-code").enabled is False

        run_playground(browser, "What is 12 times 7?")
        result = text_of(browser, "#pg-result")
        assert "math" in result and "category" in result
        css(browser, "#pg-send")[0].click()
        wait(browser, lambda d: "from local-" in text_of(d, "#pg-answer"), timeout=300)
        shoot(browser, tmp_path, f"service-playground-{service.topology}")
    finally:
        with reg.session() as s:
            repo.set_expert_enabled(s, name="local-code", enabled=True)
            if rec is not None:
                repo.revoke_api_key(s, key_id=rec.id)
        reg.close()
        # the tests after this one share the service: wait until it serves local-code again
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = httpx.get(f"{service.base}/readyz", timeout=30).json()
            models = httpx.get(f"{service.base}/v1/models", timeout=30).json().get("data", [])
            usable = (ready.get("experts") or {}).get("usable", [])
            if "local-code" in usable and "local-code" in {m["id"] for m in models}:
                break
            time.sleep(0.25)
