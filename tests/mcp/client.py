"""Drives the official MCP Python SDK (`mcp` on PyPI, 2.x) against a live Nexus and asserts what
comes back. `.ci/mcp.sh` installs the SDK (pinned in tests/mcp/requirements.txt), starts the
server and runs this. Environment:

    NEXUS_URL           the server, e.g. http://127.0.0.1:8080 (its /mcp is used)
    NEXUS_BIN           the nexus binary, for stdio (`nexus --data-dir DIR mcp`)
    NEXUS_DATA_DIR      the server's data directory: `nexus mcp` on it relays to the server
    NEXUS_FREE_DATA_DIR a data directory no server holds: `nexus mcp` serves it in its own process
    NEXUS_CONFIG        the configuration file both use
    NEXUS_KEY           a read/write key of project A
    NEXUS_READ_KEY      a read-only key of project A
    NEXUS_OTHER_KEY     a read/write key of project B

Every tool is called, with its answer asserted, over Streamable HTTP (the current protocol,
2026-07-28, and the `initialize` handshake of the revisions before it) and over stdio (relayed to
the server, and in process on a free data directory). Then: a wrong key is refused, a read key
cannot write, project B sees nothing of project A, bad input is a JSON-RPC error and writes
nothing. Exits non-zero with the first failure's message.
"""

import asyncio
import json
import os
import sys
import traceback
import uuid

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

URL = os.environ["NEXUS_URL"].rstrip("/") + "/mcp"
BIN = os.environ["NEXUS_BIN"]
DATA_DIR = os.environ["NEXUS_DATA_DIR"]
FREE_DATA_DIR = os.environ["NEXUS_FREE_DATA_DIR"]
CONFIG = os.environ["NEXUS_CONFIG"]
KEY = os.environ["NEXUS_KEY"]
READ_KEY = os.environ["NEXUS_READ_KEY"]
OTHER_KEY = os.environ["NEXUS_OTHER_KEY"]

MODERN = "2026-07-28"
RUN = uuid.uuid4().hex[:8]
MARK = f"alpha-secret-{RUN}"
TOOLS = {
    "add_memory": False, "search_memories": True, "list_memories": True, "get_memory": True,
    "update_memory": False, "delete_memory": False, "memory_history": True,
    "search_knowledge": True, "ask": True, "add_document": False, "get_document": True,
    "list_meetings": True, "get_meeting": True, "search_meetings": True, "get_meeting_transcript": True,
}  # name -> read-only
INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002


def not_found_code(client):
    """A missing resource's JSON-RPC code: -32602 from 2026-07-28 on, -32002 before."""
    return INVALID_PARAMS if client.protocol_version >= MODERN else RESOURCE_NOT_FOUND


class Failure(Exception):
    pass


def check(condition, message, *context):
    if not condition:
        detail = "".join(f"\n    {json.dumps(c, default=str)[:2000]}" for c in context)
        raise Failure(f"{message}{detail}")


def http(key, mode="auto"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(URL, http_client=client), mode=mode, read_timeout_seconds=120)


def stdio(key, data_dir, mode="auto"):
    env = {"NEXUS_CONFIG": CONFIG, "RUST_LOG": "warn"}
    if key:
        env["NEXUS_API_KEY"] = key
    params = StdioServerParameters(command=BIN, args=["--data-dir", data_dir, "mcp"], env=env)
    return Client(params, mode=mode, read_timeout_seconds=120)


async def ok(client, tool, arguments):
    """A successful call's structured content, checked against its text block."""
    result = await client.call_tool(tool, arguments)
    check(not result.is_error, f"{tool} failed", result.model_dump())
    structured = result.structured_content
    check(isinstance(structured, dict), f"{tool}: structured content is a JSON object", result.model_dump())
    check(json.loads(result.content[0].text) == structured, f"{tool}: the text block is the same JSON")
    return structured


async def tool_error(client, tool, arguments):
    """A call that ran and failed: its {code, message}."""
    result = await client.call_tool(tool, arguments)
    check(result.is_error, f"{tool} must fail", result.model_dump())
    return result.structured_content["error"]


async def rpc_error(call):
    """A request refused with a JSON-RPC error: the error."""
    try:
        answer = await call
    except MCPError as e:
        return e.error
    raise Failure(f"expected a JSON-RPC error, got {answer!r:.500}")


async def every_tool(client, tag):
    """Lists the tools and calls each one; `tag` keeps this run's data apart from the others'."""
    listed = await client.list_tools()
    names = {t.name: t for t in listed.tools}
    check(set(names) == set(TOOLS), f"{tag}: the tools", sorted(names))
    for name, read_only in TOOLS.items():
        tool = names[name]
        check(len(tool.description or "") > 40, f"{tag}: {name} describes itself")
        check(tool.input_schema.get("type") == "object", f"{tag}: {name} has an object schema", tool.input_schema)
        check(tool.annotations is not None and tool.annotations.read_only_hint is read_only,
              f"{tag}: {name} read-only hint", tool.annotations and tool.annotations.model_dump())
        if not read_only:
            check(tool.annotations.destructive_hint is not None and tool.annotations.idempotent_hint is not None,
                  f"{tag}: {name} says whether it destroys and whether it repeats", tool.annotations.model_dump())

    user = f"{tag}-{RUN}-alice"
    added = await ok(client, "add_memory", {"text": f"{user} prefers green tea {MARK}", "user_id": user,
                                            "categories": ["preferences"]})
    check(added["results"][0]["event"] == "ADD", f"{tag}: add_memory adds", added)
    memory_id = added["results"][0]["id"]
    check(added["results"][0]["memory"] == f"{user} prefers green tea {MARK}", f"{tag}: stored as given", added)
    await ok(client, "add_memory", {"text": f"{user} lives in Lyon", "user_id": user, "tier": "factual"})

    found = await ok(client, "search_memories", {"query": "green tea", "user_id": user})
    check(found["results"] and found["results"][0]["id"] == memory_id, f"{tag}: search_memories finds it", found)
    check(0 < found["results"][0]["score"] <= 1, f"{tag}: a score in 0..1", found)
    check(all(r["user_id"] == user for r in found["results"]), f"{tag}: only this user's memories", found)

    listed = await ok(client, "list_memories", {"user_id": user})
    check(listed["total"] == 2 and len(listed["memories"]) == 2, f"{tag}: list_memories", listed)
    page = await ok(client, "list_memories", {"user_id": user, "limit": 1, "offset": 1})
    check(len(page["memories"]) == 1 and page["offset"] == 1, f"{tag}: list_memories pages", page)

    got = await ok(client, "get_memory", {"id": memory_id})
    check(got["id"] == memory_id and got["categories"] == ["preferences"], f"{tag}: get_memory", got)

    updated = await ok(client, "update_memory", {"id": memory_id, "text": f"{user} prefers jasmine tea"})
    check(updated["memory"] == f"{user} prefers jasmine tea", f"{tag}: update_memory", updated)
    history = await ok(client, "memory_history", {"id": memory_id})
    check([h["event"] for h in history["history"]] == ["ADD", "UPDATE"], f"{tag}: memory_history", history)
    check(history["history"][1]["old_memory"] == f"{user} prefers green tea {MARK}", f"{tag}: old text kept", history)

    templates = await client.list_resource_templates()
    uris = sorted(t.uri_template for t in templates.resource_templates)
    check(uris == ["nexus://documents/{id}", "nexus://memories/{id}"], f"{tag}: resource templates", uris)
    read = await client.read_resource(f"nexus://memories/{memory_id}")
    check(json.loads(read.contents[0].text)["memory"] == f"{user} prefers jasmine tea", f"{tag}: a memory resource")

    collection = f"{tag}-{RUN}"
    text = f"# Tea\n\nJasmine tea is scented with jasmine blossoms. {MARK}"
    added_doc = await ok(client, "add_document", {"text": text, "title": "Tea notes", "source": "tea.md",
                                                  "collection": collection, "tags": ["tea"]})
    check(added_doc["documents"][0]["outcome"] == "created", f"{tag}: add_document", added_doc)
    doc_id = added_doc["documents"][0]["document"]["id"]
    passages = await ok(client, "search_knowledge", {"query": "what is jasmine tea scented with",
                                                     "collection": collection})
    check(passages["results"] and passages["results"][0]["document_id"] == doc_id, f"{tag}: search_knowledge",
          passages)
    check("blossoms" in passages["results"][0]["text"], f"{tag}: the passage's text", passages)
    answer = await ok(client, "ask", {"question": "What is jasmine tea scented with?", "collection": collection})
    check(answer["mode"] == "extractive" and "[1]" in answer["answer"], f"{tag}: ask answers with citations", answer)
    check(answer["citations"][0]["document_id"] == doc_id, f"{tag}: ask cites the document", answer)
    document = await ok(client, "get_document", {"id": doc_id})
    check(document["title"] == "Tea notes" and document["collection"] == collection, f"{tag}: get_document", document)
    read = await client.read_resource(f"nexus://documents/{doc_id}")
    check(json.loads(read.contents[0].text)["source"] == "tea.md", f"{tag}: a document resource")

    await meeting_tools(client, tag)

    deleted = await ok(client, "delete_memory", {"id": memory_id})
    check(deleted == {"deleted": memory_id}, f"{tag}: delete_memory", deleted)
    gone = await tool_error(client, "get_memory", {"id": memory_id})
    check(gone["code"] == "not_found", f"{tag}: deleted means not found", gone)
    error = await rpc_error(client.read_resource(f"nexus://memories/{memory_id}"))
    check(error.code == not_found_code(client) and error.data["code"] == "not_found",
          f"{tag}: a deleted memory's resource", error.model_dump())
    return memory_id, doc_id


async def seed_meeting(title):
    """A meeting with two finals, put in over the HTTP API and searchable when this returns: its id."""
    base = os.environ["NEXUS_URL"].rstrip("/")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as api:
        created = await api.post(f"{base}/api/v1/meetings?wait=true", json={"title": title})
        check(created.status_code == 201, "a meeting over HTTP", created.text)
        meeting_id = created.json()["id"]
        segments = {"segments": [
            {"segment_id": "s1", "speaker": "Dana", "start_ms": 0, "end_ms": 3000,
             "text": f"We ship the {title} beta on Friday.", "is_final": True},
            {"segment_id": "s2", "speaker": "Lee", "start_ms": 3100, "end_ms": 5000,
             "text": "I will write the release notes by Thursday.", "is_final": True},
        ]}
        added = await api.post(f"{base}/api/v1/meetings/{meeting_id}/segments?wait=true", json=segments)
        check(added.status_code == 200, "segments over HTTP", added.text)
    return meeting_id


async def meeting_tools(client, tag):
    """The meeting tools: on a data directory a server holds, over a meeting put in through its API."""
    missing = await tool_error(client, "get_meeting", {"id": f"no-such-meeting-{RUN}"})
    check(missing["code"] == "not_found", f"{tag}: get_meeting of an unknown id", missing)
    if tag == "local":
        listed = await ok(client, "list_meetings", {})
        check(listed["meetings"] == [], f"{tag}: no meetings on a new data directory", listed)
        return
    title = f"{tag}{RUN}"
    meeting_id = await seed_meeting(title)
    listed = await ok(client, "list_meetings", {"limit": 500})
    check(meeting_id in [m["id"] for m in listed["meetings"]], f"{tag}: list_meetings", listed)
    found = await ok(client, "search_meetings", {"query": f"when does the {title} beta ship",
                                                 "meeting_id": meeting_id})
    check(found["results"] and "Friday" in found["results"][0]["text"], f"{tag}: search_meetings", found)
    got = await ok(client, "get_meeting", {"id": meeting_id})
    check(got["meeting"]["title"] == title and isinstance(got["insights"], list), f"{tag}: get_meeting", got)
    transcript = await ok(client, "get_meeting_transcript", {"id": meeting_id})
    check(f"Dana: We ship the {title} beta on Friday." in transcript["transcript"],
          f"{tag}: get_meeting_transcript", transcript)


async def bad_input(client, tag):
    """Unknown tools, arguments that break the schema and oversized arguments: JSON-RPC errors,
    nothing written."""
    user = f"{tag}-{RUN}-mallory"
    cases = [
        ("no_such_tool", {}),
        ("add_memory", {"text": 5, "user_id": user}),
        ("add_memory", {"user_id": user}),
        ("add_memory", {"text": "x", "user_id": user, "colour": "red"}),
        ("add_memory", {"text": "x" * 70_000, "user_id": user}),
        ("add_document", {"text": "y", "format": "pdf", "collection": user}),
        ("search_memories", {"query": "q", "top_k": 0}),
    ]
    for tool, arguments in cases:
        error = await rpc_error(client.call_tool(tool, arguments))
        check(error.code == INVALID_PARAMS, f"{tag}: {tool} {str(arguments)[:80]} is invalid params", error.model_dump())
    listed = await ok(client, "list_memories", {"user_id": user})
    check(listed["total"] == 0, f"{tag}: nothing was written", listed)
    found = await ok(client, "search_knowledge", {"query": "y", "collection": user})
    check(found["results"] == [], f"{tag}: no document was written", found)


def causes(error):
    """The text of an error and of every error inside it (task groups wrap them)."""
    out = [f"{type(error).__name__}: {error}"]
    for inner in getattr(error, "exceptions", ()):
        out.extend(causes(inner))
    if error.__cause__ is not None:
        out.extend(causes(error.__cause__))
    return out


async def refused(client_factory, key, tag):
    """A wrong key: the SDK's connection fails with the server's message, and /mcp answers 401."""
    try:
        async with client_factory() as client:
            await client.list_tools()
    except Exception as e:  # noqa: BLE001 (task groups wrap the MCPError)
        text = " | ".join(causes(e))
        check("API key" in text, f"{tag}: refused, saying why", text)
    else:
        raise Failure(f"{tag}: a wrong key was let in")
    headers = {"Accept": "application/json, text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx2.AsyncClient(timeout=30) as raw:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        response = await raw.post(URL, json=body, headers=headers)
    check(response.status_code == 401 and response.headers.get("www-authenticate", "").startswith("Bearer"),
          f"{tag}: 401 with WWW-Authenticate", response.status_code, dict(response.headers))
    check(response.json()["error"]["data"]["code"] == "unauthorized", f"{tag}: a JSON-RPC error", response.json())


async def isolation(memory_id, doc_id):
    """A read key cannot write; project B's key sees and changes nothing of project A's."""
    async with http(READ_KEY) as reader:
        got = await ok(reader, "get_memory", {"id": memory_id})
        check(MARK in got["memory"], "a read key reads", got)
        for tool, arguments in [
            ("add_memory", {"text": "a reader's memory", "user_id": f"{RUN}-reader"}),
            ("update_memory", {"id": memory_id, "text": "changed by a reader"}),
            ("delete_memory", {"id": memory_id}),
            ("add_document", {"text": "a reader's document"}),
        ]:
            error = await tool_error(reader, tool, arguments)
            check(error["code"] == "forbidden" and "`write`" in error["message"], f"a read key: {tool}", error)
    async with http(KEY) as writer:
        got = await ok(writer, "get_memory", {"id": memory_id})
        check(MARK in got["memory"], "the read key changed nothing", got)

    seen = []
    async with http(OTHER_KEY) as other:
        for tool, arguments in [
            ("get_memory", {"id": memory_id}),
            ("memory_history", {"id": memory_id}),
            ("update_memory", {"id": memory_id, "text": "b's edit"}),
            ("delete_memory", {"id": memory_id}),
            ("get_document", {"id": doc_id}),
        ]:
            error = await tool_error(other, tool, arguments)
            check(error["code"] == "not_found", f"project B: {tool}", error)
            seen.append(error)
        for tool, arguments, field in [
            ("search_memories", {"query": "green tea"}, "results"),
            ("list_memories", {}, "memories"),
            ("search_knowledge", {"query": "jasmine tea blossoms"}, "results"),
            ("ask", {"question": "What is jasmine tea scented with?"}, "citations"),
        ]:
            answer = await ok(other, tool, arguments)
            check(answer[field] == [], f"project B: {tool} finds nothing of project A", answer)
            seen.append(answer)
        for uri in [f"nexus://memories/{memory_id}", f"nexus://documents/{doc_id}"]:
            error = await rpc_error(other.read_resource(uri))
            check(error.code == not_found_code(other) and error.data["code"] == "not_found", f"project B: {uri}",
                  error.model_dump())
            seen.append(error.model_dump())
    check(MARK not in json.dumps(seen, default=str), "project B saw project A's data", seen)
    async with http(KEY) as writer:
        history = await ok(writer, "memory_history", {"id": memory_id})
        check(len(history["history"]) == 1, "project B changed nothing", history)


async def main():
    # Streamable HTTP, the current protocol (the SDK's default: discover, no handshake).
    async with http(KEY) as client:
        check(client.protocol_version == MODERN, "HTTP speaks the current protocol", client.protocol_version)
        await every_tool(client, "http")
        await bad_input(client, "http")
    print(f"mcp: Streamable HTTP ({MODERN}): every tool answered; bad input refused")

    # Streamable HTTP with the initialize handshake of the earlier revisions.
    async with http(KEY, mode="legacy") as client:
        check(client.protocol_version < MODERN, "the handshake settles on an earlier revision",
              client.protocol_version)
        check(client.server_info.name == "nexus", "the server names itself", client.server_info.model_dump())
        legacy = client.protocol_version
        await every_tool(client, "legacy")
        await bad_input(client, "legacy")
    print(f"mcp: Streamable HTTP ({legacy}, initialize): every tool answered; bad input refused")

    # stdio: `nexus mcp` on the server's data directory relays to the server.
    async with stdio(KEY, DATA_DIR) as client:
        await every_tool(client, "stdio")
        await bad_input(client, "stdio")
    async with stdio(KEY, DATA_DIR, mode="legacy") as client:
        got = await client.call_tool("list_memories", {"user_id": f"stdio-{RUN}-alice"})
        check(got.structured_content["total"] == 1, "stdio (initialize): list_memories", got.model_dump())
    print("mcp: stdio through the running server: every tool answered; bad input refused")

    # stdio on a data directory no server holds: the MCP server runs in the `nexus mcp` process.
    async with stdio(None, FREE_DATA_DIR) as client:
        await every_tool(client, "local")
    print("mcp: stdio on its own data directory: every tool answered")

    # Keys, scopes and projects.
    memory_id, doc_id = None, None
    async with http(KEY) as client:
        added = await ok(client, "add_memory", {"text": f"the vault code is {MARK}", "user_id": f"{RUN}-vault"})
        memory_id = added["results"][0]["id"]
        added = await ok(client, "add_document", {"text": f"vault manual {MARK}", "source": f"vault-{RUN}.txt"})
        doc_id = added["documents"][0]["document"]["id"]
    wrong = KEY[:-4] + ("0000" if not KEY.endswith("0000") else "1111")
    await refused(lambda: http(wrong), wrong, "HTTP, a wrong key")
    await refused(lambda: http(None), None, "HTTP, no key")
    await refused(lambda: stdio(wrong, DATA_DIR), wrong, "stdio, a wrong key")
    await isolation(memory_id, doc_id)
    print("mcp: a wrong key is refused; a read key cannot write; project B sees nothing of project A")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Failure as e:
        print(f"mcp: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        print("mcp: FAILED with an exception", file=sys.stderr)
        sys.exit(1)
    print("mcp: every check passed")
