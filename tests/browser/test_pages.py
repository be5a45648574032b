"""Every page, light and dark, wide and narrow: loads with no console error, no failed request and
nothing off the server's origin, passes axe-core, and is reachable by keyboard."""

import pytest
from playwright.sync_api import expect

from conftest import NARROW, PAGES, api, run_axe, screenshot, wait_settled


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("route", list(PAGES))
def test_page_loads_clean_and_accessible(open_page, route, scheme):
    page, _ = open_page(color_scheme=scheme)
    page.goto(f"/#/{route}")
    expect(page.locator("main h1")).to_have_text(PAGES[route])
    expect(page).to_have_title(f"{PAGES[route]} · Nexus")
    wait_settled(page)
    # The page's own error banners would mean a broken page even without a console error.
    expect(page.locator("main .banner--error")).to_have_count(0)
    # Landmarks: one main, one navigation with the link to this page marked current.
    expect(page.get_by_role("main")).to_have_count(1)
    nav = page.get_by_role("navigation", name="Main")
    if route != "login":
        expect(nav.locator('a[aria-current="page"]')).to_have_text(PAGES[route])
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(14, 17, 22)") == (scheme == "dark"), background
    run_axe(page, f"{route}, {scheme}")
    screenshot(page, f"{route}-{scheme}")


@pytest.mark.parametrize("route", ["search", "memories", "meetings", "documents", "jobs", "keys"])
def test_narrow_screen(open_page, route):
    page, _ = open_page(viewport=NARROW, color_scheme="dark" if route == "memories" else "light")
    page.goto(f"/#/{route}")
    expect(page.locator("main h1")).to_have_text(PAGES[route])
    wait_settled(page)
    # Nothing wider than the screen: tables scroll inside their own region, the page does not.
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    # The navigation is a top bar above the content.
    nav_box = page.get_by_role("navigation", name="Main").bounding_box()
    main_box = page.locator("main").bounding_box()
    assert nav_box["y"] + nav_box["height"] <= main_box["y"] + 1
    run_axe(page, f"{route}, narrow")
    screenshot(page, f"{route}-narrow")


@pytest.fixture(scope="module")
def seeded_meeting():
    """A live meeting with a transcript, insights and participants, made through the API."""
    status, meeting = api("POST", "/api/v1/meetings?wait=true", {
        "title": "Pages check: harbour planning", "status": "live",
        "participants": [{"name": "Priya", "email": "priya@example.com", "user_id": "priya"}, {"name": "Tomas"}]})
    assert status == 201, meeting
    segments = {"segments": [
        {"segment_id": "p1", "speaker": "Priya", "start_ms": 1_000, "end_ms": 4_000,
         "text": "We decided to move the harbour sensors to the north pier.", "is_final": True},
        {"segment_id": "p2", "speaker": "Tomas", "start_ms": 4_500, "end_ms": 8_000,
         "text": "I will send the installers the new plan by Monday.", "is_final": True},
        {"segment_id": "p3", "speaker": "Priya", "start_ms": 8_500, "end_ms": 11_000,
         "text": "Who talks to the harbour master about the permits?", "is_final": True},
    ]}
    status, added = api("POST", f"/api/v1/meetings/{meeting['id']}/segments?wait=true", segments)
    assert status == 200, added
    return meeting["id"]


@pytest.mark.parametrize("look", ["light", "dark", "narrow"])
def test_meeting_page_loads_clean_and_accessible(open_page, seeded_meeting, look):
    narrow = look == "narrow"
    page, _ = open_page(color_scheme="dark" if look == "dark" else "light", **({"viewport": NARROW} if narrow else {}))
    page.goto(f"/#/meetings/{seeded_meeting}")
    expect(page.locator("main h1")).to_have_text("Pages check: harbour planning")
    expect(page).to_have_title("Pages check: harbour planning · Nexus")
    expect(page.get_by_role("log", name="Transcript").locator(".segment")).to_have_count(3)
    expect(page.locator('.insight-list[data-kind="decision"] .insight')).to_have_count(1)
    wait_settled(page)
    expect(page.locator("main .banner--error")).to_have_count(0)
    expect(page.locator(".meeting-meta")).to_contain_text("3 segments")
    expect(page.locator("main")).not_to_contain_text("null")
    # The list it belongs to stays marked in the navigation.
    expect(page.get_by_role("navigation", name="Main").locator('a[aria-current="page"]')).to_have_text("Meetings")
    if narrow:
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the meeting page is {overflow}px wider than a phone screen"
    run_axe(page, f"meeting, {look}")
    screenshot(page, f"meeting-{look}")


def test_search_results_pass_axe_in_both_schemes(open_page):
    for scheme in ("light", "dark"):
        page, _ = open_page(color_scheme=scheme)
        page.goto("/#/search?q=onboarding%20laptop")
        expect(page.locator("main section", has_text="Documents").locator(".result").first).to_be_visible()
        wait_settled(page)
        run_axe(page, f"search results, {scheme}")
        screenshot(page, f"search-results-{scheme}")


def test_theme_picker_overrides_the_system_scheme(open_page):
    page, _ = open_page(color_scheme="light")
    page.goto("/#/status")
    wait_settled(page)
    light = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    page.get_by_label("Theme").select_option("dark")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    dark = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert light != dark
    assert dark == "rgb(14, 17, 22)"
    # The choice outlives a reload, and a dark page chosen this way is accessible too.
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(page.get_by_label("Theme")).to_have_value("dark")
    wait_settled(page)
    run_axe(page, "status, dark by choice")
    page.get_by_label("Theme").select_option("auto")
    expect(page.locator("html")).not_to_have_attribute("data-theme", "dark")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == light


def test_keyboard_reaches_every_page_through_the_navigation(open_page):
    page, _ = open_page()
    page.goto("/#/status")
    wait_settled(page)
    # The first Tab stop is the skip link; it moves focus to the content without changing the route.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    assert page.evaluate("() => location.hash") == "#/status"

    # From the top: skip link, brand, then the navigation's links in their order.
    page.reload()
    wait_settled(page)
    labels = list(PAGES.values()) + ["API docs"]
    page.keyboard.press("Tab")  # skip link
    page.keyboard.press("Tab")  # brand
    expect(page.get_by_role("link", name="Nexus home")).to_be_focused()
    for label in labels:
        page.keyboard.press("Tab")
        focused = page.evaluate("() => [document.activeElement.textContent, getComputedStyle(document.activeElement).outlineStyle]")
        assert focused[0] == label, f"Tab reached {focused[0]!r}, expected {label!r}"
        assert focused[1] != "none", f"the focus on {label!r} is not visible"
    expect(page.get_by_role("link", name="API docs")).to_have_attribute("href", "/docs")
    # After the navigation: the theme picker, then the page's content.
    page.keyboard.press("Tab")
    expect(page.get_by_label("Theme")).to_be_focused()

    # Enter on a link opens its page and puts focus at the start of the content.
    for route, label in PAGES.items():
        if route in ("login",):
            continue
        link = page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True)
        link.focus()
        page.keyboard.press("Enter")
        expect(page.locator("main h1")).to_have_text(label)
        expect(page.locator("main")).to_be_focused()
        assert page.evaluate("() => location.hash").startswith(f"#/{route}")
        wait_settled(page)


def test_unknown_route_says_so(open_page):
    page, _ = open_page()
    page.goto("/#/no-such-page")
    expect(page.locator("main h1")).to_have_text("Page not found")
    run_axe(page, "not found")
