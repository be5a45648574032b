"""The graph page, as a person uses it against the live server: find an entity, read its
neighbourhood drawn and tabled, move through time, find a path, re-centre, colour by community,
add entities and relations, and read the server's refusal of a bad one."""

import json
import re
import uuid

import pytest
from playwright.sync_api import expect

from conftest import NARROW, api, run_axe, screenshot, wait_settled


def add_entity(name, kind):
    status, entity = api("POST", "/api/v1/graph/entities", {"name": name, "type": kind})
    assert status in (200, 201), entity
    return entity["id"]


def add_relation(source, kind, target, valid_at, fact=None):
    body = {"source": source, "type": kind, "target": target, "valid_at": valid_at}
    if fact:
        body["fact"] = fact
    status, relation = api("POST", "/api/v1/graph/relations", body)
    assert status in (200, 201), relation
    return relation


@pytest.fixture
def career():
    """A person who worked for Acme from 2020, then Globex from 2023, and a colleague at Globex;
    every name carries a word of its own, so searches find these and nothing else."""
    tag = uuid.uuid4().hex[:8]
    names = {key: f"{word} {tag}" for key, word in
             [("person", "Mira"), ("acme", "Acme"), ("globex", "Globex"), ("colleague", "Tomas")]}
    ids = {
        "person": add_entity(names["person"], "person"),
        "acme": add_entity(names["acme"], "organization"),
        "globex": add_entity(names["globex"], "organization"),
        "colleague": add_entity(names["colleague"], "person"),
    }
    add_relation(ids["person"], "works_for", ids["acme"], "2020-01-01T00:00:00Z", "Mira joined Acme.")
    moved = add_relation(ids["person"], "works_for", ids["globex"], "2023-01-01T00:00:00Z", "Mira moved to Globex.")
    assert len(moved["closed"]) == 1, moved  # the Acme years end where Globex begins
    add_relation(ids["colleague"], "works_for", ids["globex"], "2022-06-01T00:00:00Z")
    return {"tag": tag, "names": names, "ids": ids}


def drawn_names(page):
    return sorted(page.locator("svg.graph-svg .graph-node").evaluate_all("els => els.map((e) => e.dataset.name)"))


def table_rows(page):
    return page.get_by_role("region", name="Relation list").locator("tbody tr")


def open_entity_by_search(page, name):
    page.goto("/#/graph")
    wait_settled(page)
    page.get_by_label("Find an entity").fill(name)
    page.get_by_role("button", name="Find", exact=True).first.click()
    results = page.locator(".entity-results").first
    hit = results.locator(".result", has=page.get_by_role("button", name=name, exact=True))
    expect(hit).to_contain_text("person")
    expect(hit).to_contain_text("score")
    hit.get_by_role("button", name=name, exact=True).click()
    expect(page.get_by_role("heading", level=2, name=name)).to_be_visible()


def test_explore_a_neighbourhood_through_time_and_find_a_path(open_page, career):
    names, ids = career["names"], career["ids"]
    page, _ = open_page()
    open_entity_by_search(page, names["person"])
    assert page.evaluate("() => location.hash") == f"#/graph/{ids['person']}"

    # Now (no date): both employers and the colleague two relations away; Acme's years ended.
    everyone = sorted(names.values())
    expect(page.locator("svg.graph-svg .graph-node")).to_have_count(4)
    assert drawn_names(page) == everyone
    svg = page.locator("svg.graph-svg")
    expect(svg.locator("title").first).to_have_text(f"Neighbourhood of {names['person']}")
    expect(svg.locator("desc")).to_contain_text("4 entities and 3 relations")
    rows = table_rows(page)
    expect(rows).to_have_count(3)
    acme_row = rows.filter(has_text=names["acme"])
    expect(acme_row).to_contain_text("works_for")
    expect(acme_row).to_contain_text("Mira joined Acme.")
    expect(acme_row).to_contain_text("2020")
    expect(acme_row).to_contain_text("2023")  # valid to: when Globex began
    expect(rows.filter(has_text=names["colleague"])).to_contain_text(names["globex"])
    ended = svg.locator(".graph-edge--ended")
    expect(ended).to_have_count(1)
    expect(ended.locator("title")).to_have_text(f"{names['person']} works_for {names['acme']} (ended)")
    expect(svg.locator(".graph-edge__label")).to_have_text(["works_for"] * 3)
    run_axe(page, "graph, neighbourhood")
    screenshot(page, "flow-graph-now")

    # As of 2021: Mira worked for Acme; Globex (and the colleague met there) are not there yet.
    page.get_by_label("As of").fill("2021-06-01")
    expect(page.locator("svg.graph-svg .graph-node")).to_have_count(2)
    assert drawn_names(page) == sorted([names["person"], names["acme"]])
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(names["acme"])
    expect(svg.locator(".graph-edge--ended")).to_have_count(0)  # true on that day
    assert "as_of=2021-06-01" in page.evaluate("() => location.hash")
    # As of 2024: Globex, not Acme.
    page.get_by_label("As of").fill("2024-06-01")
    expect(rows).to_have_count(2)
    assert names["acme"] not in drawn_names(page)
    assert names["globex"] in drawn_names(page)
    page.get_by_role("button", name="Now", exact=True).click()
    expect(rows).to_have_count(3)

    # The path to the colleague: through Globex, highlighted in the drawing, listed and tabled.
    page.get_by_label("Path to", exact=True).fill(names["colleague"])
    page.get_by_role("search", name="Find the other end of a path").get_by_role("button", name="Find").click()
    page.locator(".graph-path").get_by_role("button", name=names["colleague"], exact=True).click()
    expect(page.locator(".graph-path__summary")).to_contain_text("2 steps")
    expect(page.locator(".graph-path__steps li")).to_have_text([
        names["person"], f"— works_for → {names['globex']}", f"← works_for — {names['colleague']}"])
    expect(svg.locator(".graph-node--path")).to_have_count(3)
    expect(svg.locator(".graph-edge--path")).to_have_count(2)
    expect(rows.locator("xpath=self::tr[contains(@class, 'is-path')]")).to_have_count(2)
    screenshot(page, "flow-graph-path")

    # With one hop the colleague is not in the neighbourhood, yet the path still draws them.
    page.get_by_label("Hops").select_option("1")
    expect(page.locator(".graph-explorer .page__meta").first).to_contain_text("3 entities, 2 relations · 1 hop")
    expect(rows).to_have_count(3)  # two of Mira's relations, and the path's last step
    assert drawn_names(page) == everyone
    expect(svg.locator(".graph-node--path")).to_have_count(3)

    # A node is a link: by keyboard, Globex goes in the middle, and the address follows.
    globex = svg.get_by_role("link", name=f"{names['globex']} (organization): open")
    globex.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=2, name=names["globex"])).to_be_visible()
    expect(svg.locator(".graph-node--centre")).to_have_attribute("data-name", names["globex"])
    assert page.evaluate("() => location.hash").startswith(f"#/graph/{ids['globex']}?")
    # Back returns to Mira.
    page.go_back()
    expect(page.get_by_role("heading", level=2, name=names["person"])).to_be_visible()


def test_add_an_entity_and_a_relation_with_the_forms(open_page, career):
    names, ids = career["names"], career["ids"]
    page, watcher = open_page()
    page.goto(f"/#/graph/{ids['person']}")
    expect(page.get_by_role("heading", level=2, name=names["person"])).to_be_visible()
    wait_settled(page)

    initech = f"Initech {career['tag']}"
    page.get_by_text("Add an entity").click()
    page.get_by_label("Name", exact=True).fill(initech)
    page.get_by_label("Entity type").fill("organization")
    page.get_by_label("Aliases").fill("Initech Corp")
    page.get_by_role("button", name="Add entity").click()
    expect(page.locator(".banner--ok", has_text=f"Saved {initech}")).to_be_visible()
    status, found = api("GET", f"/api/v1/graph/entities?query={career['tag']}&type=organization")
    assert status == 200, found
    added = [e for e in found["entities"] if e["name"] == initech]
    assert added and added[0]["aliases"] == ["Initech Corp"], found

    page.get_by_text("Add a relation").click()
    form = page.locator("form", has=page.get_by_role("button", name="Add relation"))
    expect(form.get_by_label("Source")).to_have_value(f"{names['person']} (person)")
    form.get_by_label("Relation type").fill("advises")
    form.get_by_label("Target").fill(initech)
    form.get_by_label("Fact").fill("Mira advises Initech on hiring.")
    form.get_by_label("Valid from").fill("2024-03-01")
    form.get_by_role("button", name="Add relation").click()
    expect(form.locator(".banner--ok")).to_have_text(f"Added: {names['person']} advises {initech}.")
    rows = table_rows(page)
    advises = rows.filter(has_text="advises")
    expect(advises).to_have_count(1)
    expect(advises).to_contain_text(initech)
    expect(advises).to_contain_text("2024")
    expect(page.locator("svg.graph-svg .graph-node", has_text=initech)).to_have_count(1)
    status, hood = api("GET", f"/api/v1/graph/entities/{ids['person']}/neighbourhood?hops=1")
    assert status == 200, hood
    relation = [r for r in hood["relations"] if r["type"] == "advises"]
    assert len(relation) == 1 and relation[0]["valid_at"].startswith("2024-03-01"), relation
    assert relation[0]["fact"] == "Mira advises Initech on hiring.", relation

    # A relation from Mira to herself: the server refuses it, and the page says why.
    watcher.allow(400, r"/api/v1/graph/relations")
    form.get_by_label("Target").fill(f"{names['person']} (person)")
    form.get_by_label("Relation type").fill("knows")
    form.get_by_label("Valid from").fill("")
    form.get_by_role("button", name="Add relation").click()
    alert = form.get_by_role("alert").locator(".banner--error")
    expect(alert).to_contain_text("Could not add the relation")
    expect(alert).to_contain_text("source and target are the same")
    run_axe(page, "graph, forms")
    screenshot(page, "flow-graph-forms")


def test_colouring_by_community_follows_the_server(open_page, career):
    names, ids = career["names"], career["ids"]
    status, doc = api("GET", "/openapi.json")
    assert status == 200
    page, _ = open_page()
    page.goto(f"/#/graph/{ids['person']}")
    expect(page.locator("svg.graph-svg .graph-node")).to_have_count(4)
    wait_settled(page)
    colour = page.get_by_role("button", name="Colour by community")
    # Offered exactly when the server lists the analytics route.
    if "/api/v1/graph/analytics" in doc["paths"]:
        expect(colour).to_be_visible()
    else:
        expect(colour).to_be_hidden()


def test_colour_by_community_with_the_analytics_route(open_page, career):
    names, ids = career["names"], career["ids"]
    page, watcher = open_page()
    # A server with analytics, as the page sees it: the route is described and answers.
    page.route("**/openapi.json", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"paths": {"/api/v1/graph/analytics": {"post": {}}}})))
    asked = []

    def analytics(route):
        asked.append(route.request.post_data_json)
        if len(asked) == 1:
            results = [{"entity_id": ids["person"], "value": 0}, {"entity_id": ids["acme"], "value": 0},
                       {"entity_id": ids["globex"], "value": 1}, {"entity_id": ids["colleague"], "value": 1}]
            route.fulfill(status=200, content_type="application/json", body=json.dumps({"results": results}))
        else:  # an older server: the route is gone
            route.fulfill(status=404, content_type="application/json", body=json.dumps({"error": {
                "code": "route_not_found", "message": "no route for /api/v1/graph/analytics", "type": "invalid_request"}}))

    page.route("**/api/v1/graph/analytics", analytics)
    page.goto(f"/#/graph/{ids['person']}?as_of=2024-01-01")
    expect(page.locator("svg.graph-svg .graph-node")).to_have_count(3)
    colour = page.get_by_role("button", name="Colour by community")
    colour.click()
    expect(colour).to_have_attribute("aria-pressed", "true")
    svg = page.locator("svg.graph-svg")
    expect(svg.locator(f'.graph-node[data-name="{names["person"]}"]')).to_have_class(re.compile(r"graph-node--c0\b"))
    expect(svg.locator(f'.graph-node[data-name="{names["globex"]}"]')).to_have_class(re.compile(r"graph-node--c1\b"))
    expect(page.locator(".graph-legend__item")).to_have_text(["community 0", "community 1"])
    assert asked[0] == {"algorithm": "communities", "filter": {"as_of": "2024-01-01T00:00:00Z"}}, asked
    run_axe(page, "graph, communities")

    # The route answers 404 route_not_found: the control goes away and types colour the nodes.
    watcher.allow(404, r"/api/v1/graph/analytics")
    page.get_by_label("As of").fill("2024-02-01")
    expect(colour).to_be_hidden()
    expect(page.locator(".banner--info")).to_contain_text("does not compute communities")
    expect(svg.locator(f'.graph-node[data-name="{names["globex"]}"]')).to_have_class(re.compile(r"graph-node--c1\b"))
    expect(page.locator(".graph-legend__item")).to_have_text(["organization", "person"])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_drawn_neighbourhood_fits_a_phone_screen(open_page, career, scheme):
    page, _ = open_page(viewport=NARROW, color_scheme=scheme)
    page.goto(f"/#/graph/{career['ids']['person']}")
    expect(page.locator("svg.graph-svg .graph-node")).to_have_count(4)
    wait_settled(page)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the graph page is {overflow}px wider than a phone screen"
    run_axe(page, f"graph, narrow, {scheme}")
    screenshot(page, f"graph-entity-narrow-{scheme}")
