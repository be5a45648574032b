"""What a person does with the UI, end to end against the live servers: upload a file and find it,
search documents and memories together, find what was said in a meeting, follow a live meeting and
end it, import a recorded one, add, edit and delete a memory and read its history,
follow a job live, take and verify a backup, manage projects and keys, sign in with a key on a
server that needs one, read the audit log."""

import json
import re
import urllib.request
import uuid

from playwright.sync_api import expect

from conftest import ADMIN_KEY, KEYS_URL, PAGES, URL, api, run_axe, screenshot, wait_settled


def unique(prefix):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def search(page, query, **filters):
    page.goto("/#/search")
    page.get_by_label("Query").fill(query)
    for label, value in filters.items():
        field = page.get_by_label(label.replace("_", " "), exact=True)
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_role("button", name="Search", exact=True).click()


def documents_group(page):
    return page.get_by_role("region", name="Documents", exact=True)


def memories_group(page):
    return page.get_by_role("region", name="Memories", exact=True)


def test_upload_a_file_and_find_it(open_page, tmp_path):
    word = unique("quokka")
    path = tmp_path / f"{word}.md"
    path.write_text(f"# Field notes {word}\n\nThe {word} lives on Rottnest island and smiles at visitors.\n")
    page, _ = open_page()
    page.goto("/#/documents")
    wait_settled(page)
    page.locator('input[type="file"]').set_input_files(str(path))
    expect(page.get_by_text("1 file selected")).to_be_visible()
    page.get_by_label("Collection (optional)").fill("uploads")
    page.get_by_label("Tags (optional)").fill("fieldwork, islands")
    page.get_by_role("button", name="Upload", exact=True).click()
    jobs = page.get_by_role("region", name="Processing", exact=True).first
    expect(jobs.get_by_role("row", name=re.compile(word))).to_contain_text("Succeeded", timeout=60_000)
    listed = page.locator("table.docs-table tbody tr", has_text=word)
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text("uploads")
    expect(listed).to_contain_text("fieldwork")
    screenshot(page, "flow-upload")

    # Found by search, with its collection and tags as filters; not found under another tag.
    search(page, word)
    hit = documents_group(page).locator(".result", has_text=word)
    expect(hit.first).to_be_visible()
    expect(hit.first.locator("mark").first).to_have_text(re.compile(word, re.I))
    search(page, word, Collection="uploads", Tags="islands")
    expect(documents_group(page).locator(".result", has_text=word).first).to_be_visible()
    search(page, word, Tags="no-such-tag")
    expect(documents_group(page).locator(".results__empty")).to_have_text(f"No results for “{word}”.")
    # The filters are in the address, so a reload repeats the search.
    assert "tags=no-such-tag" in page.evaluate("() => location.hash")


def test_one_search_over_documents_and_memories(open_page):
    page, _ = open_page()
    search(page, "peanuts allergic")
    expect(memories_group(page).locator(".result", has_text="Alice is allergic to peanuts")).to_be_visible()
    expect(documents_group(page)).to_be_visible()
    # Memory filters: bob's memories hold nothing about peanuts.
    search(page, "peanuts allergic", User_id="bob")
    expect(memories_group(page).locator(".result", has_text="peanuts")).to_have_count(0)
    search(page, "peanuts allergic", User_id="alice")
    memory = memories_group(page).locator(".result", has_text="Alice is allergic to peanuts")
    expect(memory).to_be_visible()
    expect(memory).to_contain_text("user: alice")
    run_axe(page, "search over both")
    screenshot(page, "flow-search-both")
    # Documents only: the memory group goes away.
    page.get_by_role("checkbox", name="Memories", exact=True).uncheck()
    page.get_by_role("button", name="Search", exact=True).click()
    expect(memories_group(page)).to_be_hidden()
    # A memory result opens that memory.
    page.get_by_role("checkbox", name="Memories", exact=True).check()
    page.get_by_role("checkbox", name="Documents", exact=True).uncheck()
    page.get_by_role("button", name="Search", exact=True).click()
    expect(documents_group(page)).to_be_hidden()
    memories_group(page).get_by_role("link", name="Alice is allergic to peanuts").click()
    expect(page.locator("main h1")).to_have_text("Memories")
    expect(page.locator(".memory-detail__text")).to_have_text("Alice is allergic to peanuts")


def test_search_finds_what_was_said_in_a_meeting(open_page):
    title = unique("Roadmap review ")
    status, meeting = api("POST", "/api/v1/meetings?wait=true", {"title": title})
    assert status == 201, meeting
    segments = {"segments": [
        {"segment_id": "s1", "speaker": "Priya", "start_ms": 65_000, "end_ms": 70_000,
         "text": "The harbour sensor rollout moves to the second quarter.", "is_final": True},
        {"segment_id": "s2", "speaker": "Tomas", "start_ms": 70_500, "end_ms": 74_000,
         "text": "Then I will brief the installers about the harbour delay.", "is_final": True},
    ]}
    status, added = api("POST", f"/api/v1/meetings/{meeting['id']}/segments?wait=true", segments)
    assert status == 200, added
    page, _ = open_page()
    search(page, "harbour sensor rollout")
    group = page.get_by_role("region", name="Meetings", exact=True)
    result = group.locator(".result", has_text="harbour sensor rollout").first
    expect(result).to_be_visible()
    expect(result.locator(".result__title")).to_have_text(title)
    expect(result).to_contain_text("Priya")
    expect(result).to_contain_text("at 1:05")
    run_axe(page, "search with meeting results")
    screenshot(page, "flow-search-meetings")
    # The speaker filter: nobody called Ana spoke in it.
    search(page, "harbour sensor rollout", Speaker="Ana")
    expect(group.locator(".result", has_text="harbour")).to_have_count(0)
    expect(group).to_contain_text("speaker “Ana”")
    # Meetings left out of the search: their group goes away.
    page.get_by_role("checkbox", name="Meetings", exact=True).uncheck()
    page.get_by_role("button", name="Search", exact=True).click()
    expect(group).to_be_hidden()


def test_add_edit_delete_a_memory_and_read_its_history(open_page):
    text = f"Carol keeps bees on the roof ({unique('hive')})"
    page, watcher = open_page()
    page.goto("/#/memories")
    wait_settled(page)
    page.get_by_text("Add a memory").click()
    add = page.locator("form.memory-form").first
    add.get_by_label("Text").fill(text)
    add.get_by_label("Belongs to").fill("carol")
    page.get_by_role("button", name="Add memory").click()
    outcome = page.locator(".banner--ok", has_text="1 change")
    expect(outcome).to_contain_text("ADD")
    outcome.get_by_role("button", name=text).click()
    detail = page.get_by_role("region", name="Memory", exact=True)
    expect(detail.locator(".memory-detail__text")).to_have_text(text)
    memory_id = page.evaluate("() => new URLSearchParams(location.hash.split('?')[1]).get('id')")
    assert memory_id

    edited = text.replace("bees", "two hives of bees")
    form = detail.locator("form.edit-form")
    form.get_by_label("Text").fill(edited)
    form.get_by_label("Categories").fill("hobbies")
    form.get_by_role("button", name="Save changes").click()
    expect(detail.locator(".banner--ok")).to_have_text("Saved.")
    expect(detail.locator(".memory-detail__text")).to_have_text(edited)
    history = detail.get_by_role("region", name="History")
    expect(history.locator(".history__entry")).to_have_count(2)
    update = history.locator(".history__entry", has_text="UPDATE")
    expect(update.locator("del")).to_have_text(text)
    expect(update.locator("ins")).to_have_text(edited)
    status, body = api("GET", f"/api/v1/memories/{memory_id}")
    assert status == 200 and body["memory"] == edited and body["categories"] == ["hobbies"]
    run_axe(page, "memory detail")
    screenshot(page, "flow-memory")

    detail.get_by_role("button", name="Delete memory").click()
    expect(detail).to_be_hidden()
    expect(page.locator(".memory-list", has_text=edited)).to_have_count(0)
    assert api("GET", f"/api/v1/memories/{memory_id}")[0] == 404

    # The history outlives the memory: its page says it was deleted and shows all three events.
    # The memory itself answers 404 now, which the page expects.
    watcher.allow(404, rf"/api/v1/memories/{memory_id}")
    page.goto(f"/#/memories/{memory_id}")
    page.reload()
    expect(page.locator(".banner--error")).to_contain_text("Memory not found")
    entries = page.get_by_role("region", name="History").locator(".history__entry .badge")
    expect(entries).to_have_text(["ADD", "UPDATE", "DELETE"])


def test_follow_a_job_live_on_the_jobs_page(open_page, tmp_path):
    page, _ = open_page()
    page.goto("/#/jobs")
    wait_settled(page)
    # Record every state a job's row shows, from the moment it appears.
    page.evaluate("""() => {
        window.seenStates = [];
        new MutationObserver(() => {
            for (const badge of document.querySelectorAll('tr[data-job] [data-state]')) {
                const entry = badge.closest('tr').dataset.job + ':' + badge.dataset.state;
                if (!window.seenStates.includes(entry)) window.seenStates.push(entry);
            }
        }).observe(document.querySelector('main'), { subtree: true, childList: true, characterData: true });
    }""")
    # A document large enough that ingesting it takes some seconds, uploaded outside the page.
    word = unique("jobword")
    body = "\n\n".join(f"Paragraph {i} about {word} and the tides of the northern sea, number {i}." for i in range(300))
    job_id = upload_text(f"{word}.txt", body)
    # Asked for at once (as a person would), the list shows the job before it can have finished;
    # from then on the page follows it by itself.
    page.get_by_role("button", name="Refresh").click()
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator("[data-state]")).to_have_attribute("data-state", "succeeded", timeout=120_000)
    expect(row.locator("progress")).to_have_attribute("value", "1")
    seen = [s.split(":")[1] for s in page.evaluate("() => window.seenStates") if s.startswith(job_id)]
    assert seen[-1] == "succeeded"
    assert any(s in ("queued", "running") for s in seen), f"the page never showed the job unfinished: {seen}"
    run_axe(page, "jobs")
    screenshot(page, "flow-jobs")


def upload_text(name, text):
    """POST /api/v1/documents as multipart (outside the browser); returns the job id."""
    boundary = uuid.uuid4().hex
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n").encode()
    request = urllib.request.Request(URL + "/api/v1/documents", data=data, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["jobs"][0]["job_id"]


def test_take_and_verify_a_backup(open_page):
    page, _ = open_page()
    page.goto("/#/backups")
    wait_settled(page)
    before = page.locator("table tbody tr", has_text=".tar.zst").count()
    page.get_by_role("button", name="Take a backup").click()
    done = page.locator(".banner--ok", has_text="Backup taken")
    expect(done).to_be_visible(timeout=120_000)
    rows = page.locator("table tbody tr", has=page.get_by_role("button", name="Verify"))
    expect(rows).to_have_count(before + 1)
    rows.first.get_by_role("button", name="Verify").click()
    expect(page.locator(".banner--ok", has_text="verified")).to_be_visible(timeout=120_000)
    with page.expect_download() as download:
        rows.first.get_by_role("button", name="Download").click()
    assert download.value.suggested_filename.endswith(".tar.zst")
    expect(page.locator(".banner--ok", has_text="Downloaded")).to_be_visible()
    screenshot(page, "flow-backup")


def test_create_a_project(open_page):
    project = unique("ui-")
    page, _ = open_page()
    page.goto("/#/projects")
    wait_settled(page)
    page.get_by_label("Id", exact=True).fill(project)
    page.get_by_label("Name", exact=True).fill("Made in the browser")
    page.get_by_role("button", name="Create project").click()
    expect(page.locator(".banner--ok")).to_contain_text(f"Project {project} created")
    expect(page.get_by_role("row", name=re.compile(project))).to_contain_text("Made in the browser")
    # The link to make a key for it proposes the project on the keys page.
    page.locator(".banner--ok").get_by_role("link", name="Create a key for it").click()
    expect(page.locator("main h1")).to_have_text("API keys")
    expect(page.get_by_label("Project", exact=True)).to_have_value(project)


def sign_in(page, watcher, key):
    """Opens the keys server's UI without a key (sent to the sign-in page), signs in with `key`."""
    # A browser without a key is refused once (status), then asks who it is (whoami): both 401.
    watcher.allow(401, r"/api/v1/(status|whoami)")
    page.goto("/#/status")
    expect(page).to_have_url(re.compile(r"#/login$"))
    expect(page.locator("main h1")).to_have_text("Sign in")
    expect(page.get_by_text("Not signed in.")).to_be_visible()
    page.get_by_label("API key or master key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    # Back where the browser wanted to go.
    expect(page).to_have_url(re.compile(r"#/status$"))
    expect(page.locator("main h1")).to_have_text("Status")
    expect(page.get_by_text("Ready", exact=True)).to_be_visible()


def test_sign_in_with_a_key_on_a_server_that_needs_one(open_page):
    page, watcher = open_page(base=KEYS_URL)
    # A wrong key first: refused with the server's message, the form stays.
    watcher.allow(401, r"/api/v1/(status|whoami)")
    page.goto("/#/login")
    page.get_by_label("API key or master key").fill("nxs_wrong_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That key was refused")
    run_axe(page, "sign-in refused")
    screenshot(page, "flow-sign-in-refused")

    sign_in(page, watcher, ADMIN_KEY)
    page.goto("/#/login")
    expect(page.locator(".page__meta").first).to_contain_text("Signed in with key")
    # The key lives in the tab's session storage, never in the address.
    assert ADMIN_KEY not in page.url
    assert page.evaluate("() => sessionStorage.getItem('nexus.apiKey')") == ADMIN_KEY
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("Not signed in.")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('nexus.apiKey')") is None


def test_create_and_revoke_a_key(open_page):
    page, watcher = open_page(base=KEYS_URL)
    sign_in(page, watcher, ADMIN_KEY)
    name = unique("robot ")
    page.goto("/#/keys")
    wait_settled(page)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("read", exact=True).check()
    page.get_by_label("write", exact=True).uncheck()
    page.get_by_role("button", name="Create key").click()
    revealed = page.get_by_label("New API key")
    expect(revealed).to_have_value(re.compile(r"^nxs_"))
    expect(revealed).to_be_focused()
    key = revealed.input_value()
    row = page.get_by_role("row", name=re.compile(name))
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("read")
    screenshot(page, "flow-keys")
    # The new key works against the API, for reading only.
    assert api("GET", "/api/v1/whoami", base=KEYS_URL, key=key)[1]["scopes"] == ["read"]
    assert api("GET", "/api/v1/status", base=KEYS_URL, key=key)[0] == 200

    row.get_by_role("button", name=re.compile("Revoke")).click()
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    assert api("GET", "/api/v1/status", base=KEYS_URL, key=key)[0] == 401

    # The audit log shows the key being made and revoked, by the admin key.
    page.goto("/#/audit")
    wait_settled(page)
    page.get_by_label("Method", exact=True).select_option("DELETE")
    # The audit log is written off the request path: ask again until the entry is there.
    revoked = page.locator("table.audit-table tbody tr", has_text="DELETE /api/v1/keys/{id}")
    for _ in range(20):
        page.get_by_role("button", name="Apply").click()
        wait_settled(page)
        if revoked.count():
            break
        page.wait_for_timeout(250)
    expect(revoked.first).to_be_visible()
    expect(revoked.first).to_contain_text("200")
    run_axe(page, "audit, signed in")
    screenshot(page, "flow-audit")

    # A project admin key sees its own project and cannot create others.
    page.goto("/#/projects")
    wait_settled(page)
    expect(page.get_by_text("Your project: default")).to_be_visible()
    expect(page.get_by_role("button", name="Create project")).to_be_hidden()
    expect(page.get_by_role("row", name=re.compile("default"))).to_be_visible()


def test_read_only_pages_on_the_signed_in_server(open_page):
    """Every page again on the server with keys, signed in: no stray 401 or 403."""
    page, watcher = open_page(base=KEYS_URL)
    sign_in(page, watcher, ADMIN_KEY)
    # Backups span tenants and need the master key: a project's admin key is told so.
    watcher.allow(403, r"/api/v1/admin/backups")
    for route, heading in PAGES.items():
        page.goto(f"/#/{route}")
        expect(page.locator("main h1")).to_have_text(heading)
        wait_settled(page)
        if route == "backups":
            expect(page.get_by_role("alert")).to_contain_text("needs the master key")
        else:
            expect(page.locator("main .banner--error")).to_have_count(0)


def meeting_id_from_hash(page):
    return page.evaluate("() => decodeURIComponent(location.hash.replace(/^#\\/meetings\\//, '').split('?')[0])")


STREAM_JS = """async ([id, messages]) => {
    // One connection to the meeting's live stream, as a transcription client would open it.
    const ws = new WebSocket(`ws://${location.host}/api/v1/meetings/${id}/stream`, ['nexus.v1']);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('no stream')); });
    const acks = [];
    const finals = messages.filter((m) => m.is_final).length;
    const done = new Promise((resolve) => {
        ws.onmessage = (e) => {
            const m = JSON.parse(e.data);
            if (m.type === 'ack' || m.type === 'error') acks.push(m);
            if (acks.length >= finals) resolve();
        };
    });
    for (const m of messages) ws.send(JSON.stringify(m));
    if (finals) await done;
    // Partials go out to the viewers every 100 ms: stay connected long enough.
    else await new Promise((resolve) => setTimeout(resolve, 400));
    ws.close();
    return acks;
}"""


def test_a_live_meeting_streams_onto_its_page_then_ends(open_page):
    title = unique("Launch planning ")
    page, _ = open_page()
    page.goto("/#/meetings")
    wait_settled(page)
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_label("Participants (optional)").fill("Alice, Bob, Carol")
    page.get_by_role("button", name="Create meeting").click()
    expect(page.locator("main h1")).to_have_text(title)
    meeting_id = meeting_id_from_hash(page)
    assert meeting_id.startswith("mtg_"), meeting_id
    expect(page.locator(".meeting-meta [data-status]")).to_have_text("Live")
    for name in ("Alice", "Bob", "Carol"):
        expect(page.locator(".participant__name", has_text=name)).to_be_visible()
    wait_settled(page)
    expect(page.locator(".transcript-empty")).to_be_visible()
    # Everything below must arrive over the page's event stream: a reload would lose this mark.
    page.evaluate("() => { window.__sameDocument = true; }")

    transcript = page.get_by_role("log", name="Transcript")
    segments = {"segments": [
        {"segment_id": "a1", "speaker": "Alice", "start_ms": 2_000, "end_ms": 5_000,
         "text": "Good morning, this is the launch check-in.", "is_final": True},
        {"segment_id": "a2", "speaker": "Bob", "start_ms": 5_500, "end_ms": 9_000,
         "text": "We decided to ship on Friday.", "is_final": True},
    ]}
    status, added = api("POST", f"/api/v1/meetings/{meeting_id}/segments", segments)
    assert status == 200, added
    expect(transcript.locator(".segment")).to_have_count(2)
    expect(transcript.locator(".segment").nth(0)).to_contain_text("Good morning, this is the launch check-in.")
    expect(transcript.locator(".segment").nth(1)).to_contain_text("Bob")
    expect(transcript.locator(".segment").nth(1)).to_contain_text("We decided to ship on Friday.")
    decision = page.locator('.insight-list[data-kind="decision"] .insight', has_text="ship on Friday")
    expect(decision).to_be_visible()

    # A partial from the live stream shows where it is said, and its final takes its place.
    page.evaluate(STREAM_JS, [meeting_id, [
        {"segment_id": "a3", "speaker": "Bob", "start_ms": 9_500, "end_ms": 11_000,
         "text": "Alice will send the", "is_final": False}]])
    partial = page.locator(".segment--partial")
    expect(partial).to_contain_text("Alice will send the")
    expect(transcript.locator(".segment")).to_have_count(2)
    acks = page.evaluate(STREAM_JS, [meeting_id, [
        {"segment_id": "a3", "speaker": "Bob", "start_ms": 9_500, "end_ms": 13_000,
         "text": "Alice will send the report by Monday.", "is_final": True}]])
    assert acks and acks[0].get("seq") == 2, acks
    expect(transcript.locator(".segment")).to_have_count(3)
    expect(transcript.locator(".segment").nth(2)).to_contain_text("Alice will send the report by Monday.")
    expect(partial).to_have_count(0)
    action = page.locator('.insight-list[data-kind="action_item"] .insight', has_text="report")
    expect(action).to_be_visible()
    expect(action.locator(".chip").first).to_have_text(re.compile("Alice"))
    expect(action).to_contain_text("due")
    expect(page.locator(".meeting-meta")).to_contain_text("3 segments")
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"

    # An insight links to the segment it came from.
    decision.get_by_role("link", name=re.compile("turn 1")).click()
    expect(transcript.locator(".segment").nth(1)).to_be_focused()
    run_axe(page, "live meeting")
    screenshot(page, "flow-meeting-live")

    # End it: the page becomes the ended meeting, with the final summary once the job made it.
    page.get_by_role("button", name="End meeting").click()
    expect(page.locator(".meeting-meta [data-status]")).to_have_text("Ended")
    expect(page.get_by_role("button", name="End meeting")).to_be_hidden()
    summary = page.get_by_role("region", name="Summary")
    expect(summary.locator(".badge")).to_have_text("Final", timeout=60_000)
    expect(summary.locator(".summary")).to_contain_text(re.compile("Friday|report"))
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    status, body = api("POST", f"/api/v1/meetings/{meeting_id}/segments", {"segments": [
        {"segment_id": "late", "speaker": "Bob", "start_ms": 20_000, "end_ms": 21_000, "text": "too late", "is_final": True}]})
    assert status == 409, body

    # The transcript search finds the passage and marks its segments.
    page.get_by_label("Find in the transcript").fill("report Monday")
    page.get_by_role("button", name="Find", exact=True).click()
    expect(page.locator(".transcript-hit").first).to_be_visible()
    expect(transcript.locator(".segment.is-match", has_text="report by Monday")).to_have_count(1)
    expect(page.locator(".transcript-hit").first.locator("mark").first).to_have_text(re.compile("report|Monday", re.I))
    # Only what a speaker said: Carol said nothing.
    page.get_by_label("Speaker", exact=True).select_option("Carol")
    page.get_by_role("button", name="Find", exact=True).click()
    expect(page.get_by_text("Nothing said by Carol matches “report Monday”.")).to_be_visible()
    expect(transcript.locator(".segment.is-match")).to_have_count(0)
    run_axe(page, "ended meeting")
    screenshot(page, "flow-meeting-ended")

    # The transcript downloads as WebVTT.
    with page.expect_download() as info:
        page.get_by_role("link", name="WebVTT transcript").click()
    path = info.value.path()
    text = open(path, encoding="utf-8").read()
    assert text.startswith("WEBVTT"), text[:100]
    assert "We decided to ship on Friday." in text


def test_import_a_recorded_transcript_and_delete_it(open_page, tmp_path):
    title = unique("Offsite planning ")
    path = tmp_path / "offsite.vtt"
    path.write_text(
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:04.000\n<v Dana>We agreed to move the offsite to May.\n\n"
        "00:00:05.000 --> 00:00:08.500\n<v Eli>Dana will book the venue by Friday.\n\n"
        "00:00:09.000 --> 00:00:11.000\n<v Dana>Sounds good, thanks everyone.\n\n")
    page, _ = open_page()
    page.goto("/#/meetings")
    wait_settled(page)
    rows = page.get_by_role("region", name="Meeting list").locator("tbody tr")

    # A meeting made elsewhere shows up in the open list without a reload.
    other = unique("Made elsewhere ")
    status, made = api("POST", "/api/v1/meetings", {"title": other})
    assert status == 201, made
    expect(rows.filter(has_text=other)).to_have_count(1)
    expect(rows.filter(has_text=other)).to_contain_text("Scheduled")

    page.get_by_label("Transcript file").set_input_files(str(path))
    page.get_by_label("Title (optional)").fill(title)
    page.get_by_role("button", name="Import", exact=True).click()
    done = page.locator(".upload-progress")
    expect(done.get_by_role("link", name=title)).to_be_visible(timeout=60_000)
    row = rows.filter(has_text=title)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Ended")
    expect(row).to_contain_text("imported from vtt")
    expect(row.locator("td").nth(2)).to_have_text("2")  # participants: Dana, Eli
    expect(row.locator("td").nth(3)).to_have_text("3")  # segments
    # The status filter.
    page.get_by_label("Status").select_option("scheduled")
    expect(rows.filter(has_text=title)).to_have_count(0)
    expect(rows.filter(has_text=other)).to_have_count(1)
    page.get_by_label("Status").select_option("ended")
    expect(rows.filter(has_text=title)).to_have_count(1)
    expect(rows.filter(has_text=other)).to_have_count(0)

    done.get_by_role("link", name=title).click()
    expect(page.locator("main h1")).to_have_text(title)
    meeting_id = meeting_id_from_hash(page)
    transcript = page.get_by_role("log", name="Transcript")
    expect(transcript.locator(".segment")).to_have_count(3)
    expect(transcript.locator(".segment").first).to_contain_text("Dana")
    expect(page.locator('.insight-list[data-kind="decision"]')).to_contain_text("offsite")
    expect(page.get_by_role("region", name="Summary").locator(".badge")).to_have_text("Final")

    # Delete it from the list (the confirmation is accepted): gone from the list and the API.
    page.get_by_role("link", name="← All meetings").click()
    expect(page.locator("main h1")).to_have_text("Meetings")
    page.get_by_role("button", name=f"Delete meeting {title}").click()
    expect(rows.filter(has_text=title)).to_have_count(0)
    status, _ = api("GET", f"/api/v1/meetings/{meeting_id}")
    assert status == 404
    api("DELETE", f"/api/v1/meetings/{made['id']}")
    expect(rows.filter(has_text=other)).to_have_count(0)


def test_a_meeting_on_a_server_that_needs_a_key(open_page):
    """Signed in: the meeting's events stream and its transcript download carry the key."""
    page, watcher = open_page(base=KEYS_URL)
    sign_in(page, watcher, ADMIN_KEY)
    title = unique("Keyed sync ")
    page.goto("/#/meetings")
    wait_settled(page)
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_role("button", name="Create meeting").click()
    expect(page.locator("main h1")).to_have_text(title)
    meeting_id = meeting_id_from_hash(page)
    wait_settled(page)
    status, added = api("POST", f"/api/v1/meetings/{meeting_id}/segments", {"segments": [
        {"segment_id": "k1", "speaker": "Mona", "start_ms": 0, "end_ms": 3_000,
         "text": "Let's go with the blue design.", "is_final": True}]}, base=KEYS_URL, key=ADMIN_KEY)
    assert status == 200, added
    expect(page.get_by_role("log", name="Transcript").locator(".segment")).to_contain_text("blue design")
    expect(page.locator(".participant__name", has_text="Mona")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("link", name="SRT transcript").click()
    assert info.value.suggested_filename == f"{meeting_id}.srt"
    text = open(info.value.path(), encoding="utf-8").read()
    assert "00:00:00,000 --> 00:00:03,000" in text, text
    assert "blue design" in text
    status, _ = api("DELETE", f"/api/v1/meetings/{meeting_id}", base=KEYS_URL, key=ADMIN_KEY)
    assert status in (200, 204)


def test_a_meeting_page_reloads_on_resync(open_page):
    status, meeting = api("POST", "/api/v1/meetings?wait=true", {"title": unique("Resync check "), "status": "live"})
    assert status == 201, meeting
    meeting_id = meeting["id"]

    def post(segment_id, text):
        status, added = api("POST", f"/api/v1/meetings/{meeting_id}/segments?wait=true", {"segments": [
            {"segment_id": segment_id, "speaker": "Noor", "start_ms": 0, "end_ms": 1_000, "text": text, "is_final": True}]})
        assert status == 200, added

    post("r1", "The first thing said.")
    page, _ = open_page()
    # The page's event stream is held here: empty streams until the test says, then one `resync`
    # from the position after the missed segment (so catching up would not bring it), then the
    # real stream.
    state = {"resync_at": None, "sent": False}

    def events(route):
        if "text/event-stream" not in (route.request.headers.get("accept") or ""):
            route.continue_()
        elif state["resync_at"] is None:
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body="")
        elif not state["sent"]:
            state["sent"] = True
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                          body=f'event: resync\ndata: {{"type": "resync", "pos": {state["resync_at"]}}}\n\n')
        else:
            route.continue_()

    page.route(re.compile(r".*/api/v1/events\?.*"), events)
    page.goto(f"/#/meetings/{meeting_id}")
    transcript = page.get_by_role("log", name="Transcript")
    expect(transcript.locator(".segment")).to_have_count(1)
    wait_settled(page)
    page.evaluate("() => { window.__sameDocument = true; }")
    post("r2", "Something said while the page was not following.")
    status, position = api("GET", f"/api/v1/events?topics=meeting:{meeting_id}")
    assert status == 200, position
    state["resync_at"] = position["pos"]
    expect(transcript.locator(".segment")).to_have_count(2, timeout=15_000)
    expect(transcript.locator(".segment").nth(1)).to_contain_text("while the page was not following")
    assert state["sent"]
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    # Then it follows live again.
    post("r3", "And this arrives live.")
    expect(transcript.locator(".segment")).to_have_count(3, timeout=15_000)
