//! MCP (the Model Context Protocol): Nexus's memory, knowledge base and meetings as tools and
//! resources for agents, over the domain services (`Memories`, `Documents`, `Meetings`, the search
//! engine, grounded answers) and never the stores.
//!
//! [`McpServer`] is one `rmcp` server handler; the transports are wired elsewhere: Streamable HTTP
//! at `/mcp` in `crate::http::mcp`, stdio (`nexus mcp`) in `crate::cli::mcp`.
//!
//! - **Who calls.** Every request resolves its caller to an [`AuthContext`] ([`Caller`]): the one
//!   the HTTP auth middleware put into the request, or, over stdio, the configured key
//!   authenticated again on each call (so revocation and expiry hold at once). The caller's
//!   project is the tenant of everything the call reads or writes. A tool annotated read-only
//!   needs the `read` scope; every other tool needs `write`. Resources need `read`.
//! - **Tools.** Names are snake_case and start with a verb (they are a contract; never rename
//!   one). Each has a JSON schema (unknown arguments are refused), a description an agent can act
//!   on, and the read-only / destructive / idempotent hints. A result is JSON in
//!   `structuredContent` and the same JSON in a text block.
//! - **Errors.** What the caller must change — an unknown tool, arguments that break the schema,
//!   values out of range, an oversized argument — is a JSON-RPC error (-32602, invalid params)
//!   and nothing runs. What happened to a well-formed call (not found, conflict, forbidden,
//!   unavailable) is a tool result with `isError` and `{"error": {code, message, type}}`, Nexus's
//!   stable codes, so an agent can read and act on it. System failures are a JSON-RPC internal
//!   error with a generic message; the detail goes to the log.

use std::sync::Arc;

use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{Extension, ToolCallContext};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, Extensions, Implementation,
    ListResourceTemplatesResult, PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::auth::{AuthContext, Scope};
use crate::error::{Error, ErrorCode, Result};
use crate::knowledge::ask::answer;
use crate::knowledge::documents::{CHUNK_KIND, DocumentMeta, validate_name};
use crate::meetings::Status;
use crate::meetings::formats::{TranscriptFormat, render};
use crate::meetings::model::{CHUNK_KIND as MEETING_CHUNK_KIND, speaker_tag};
use crate::memory::add::{AddRequest, scope_filter};
use crate::memory::search::SearchOptions;
use crate::memory::{Filter, ListRequest};
use crate::search::{Fusion, SearchRequest};
use crate::store::records::RecordFilter;

/// Resource URI templates: a memory and a document by id.
pub const MEMORY_URI: &str = "nexus://memories/{id}";
pub const DOCUMENT_URI: &str = "nexus://documents/{id}";

const INSTRUCTIONS: &str = "Nexus keeps long-term memories about users, agents and runs, and a searchable knowledge \
base of documents and meetings. Before answering about the user, search_memories with their user_id; when you learn a lasting \
fact or preference, add_memory (one fact per call). For what the documents say, search_knowledge for passages or ask \
for a cited answer; add_document stores new text. For what was said in meetings, search_meetings, then get_meeting (summary, \
action items, decisions) or get_meeting_transcript. Memories and documents are also resources: \
nexus://memories/{id} and nexus://documents/{id}.";

/// How a request's caller is found.
#[derive(Clone)]
pub enum Caller {
    /// From the request's extensions, where the transport put the authenticated caller.
    PerRequest(fn(&Extensions) -> Option<AuthContext>),
    /// One key for the whole connection (stdio): authenticated on every call. `None` in open mode.
    Key(Option<String>),
}

/// The MCP server: tools and resources over one [`App`].
#[derive(Clone)]
pub struct McpServer {
    app: Arc<App>,
    caller: Caller,
    tool_router: ToolRouter<McpServer>,
}

/// A tool's arguments. Arguments that do not match the tool's schema are a JSON-RPC error
/// (-32602): the tool does not run. (rmcp's `#[tool]` finds a tool's input schema by this name.)
pub struct Parameters<T>(pub T);

impl<T: JsonSchema> JsonSchema for Parameters<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<T> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_json::from_value(Value::Object(arguments)).map(Parameters).map_err(|e| {
            ErrorData::invalid_params(
                format!("the arguments do not match the input schema of `{}`: {e}", context.name),
                Some(json!({"code": ErrorCode::InvalidRequest.as_str()})),
            )
        })
    }
}

/// The tier a memory is kept in.
#[derive(Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierArg {
    /// The current task or session; expires.
    Working,
    /// Stable facts and preferences.
    Factual,
    /// Something that happened, at a time.
    Episodic,
    /// General knowledge.
    Semantic,
}

impl From<TierArg> for crate::memory::Tier {
    fn from(tier: TierArg) -> Self {
        match tier {
            TierArg::Working => crate::memory::Tier::Working,
            TierArg::Factual => crate::memory::Tier::Factual,
            TierArg::Episodic => crate::memory::Tier::Episodic,
            TierArg::Semantic => crate::memory::Tier::Semantic,
        }
    }
}

/// How a search ranks: both rankings fused, words only, or meaning only.
#[derive(Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    #[default]
    Hybrid,
    Keyword,
    Semantic,
}

impl From<ModeArg> for crate::search::Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Hybrid => crate::search::Mode::Hybrid,
            ModeArg::Keyword => crate::search::Mode::Keyword,
            ModeArg::Semantic => crate::search::Mode::Semantic,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemoryArgs {
    /// What to remember, in plain words: one fact, preference or event.
    pub text: String,
    /// The user the memory is about. Give at least one of user_id, agent_id, app_id, run_id.
    pub user_id: Option<String>,
    /// The agent the memory belongs to.
    pub agent_id: Option<String>,
    /// The application the memory belongs to.
    pub app_id: Option<String>,
    /// The conversation or task run the memory belongs to.
    pub run_id: Option<String>,
    /// Default: chosen from the text and the scope.
    pub tier: Option<TierArg>,
    /// Labels such as "preferences" (at most 20).
    #[serde(default)]
    pub categories: Vec<String>,
    /// A JSON object kept with the memory; its top-level scalar values can be filtered on.
    pub metadata: Option<Map<String, Value>>,
    /// false (default): store the text as given. true: extract the facts it states, merged with known ones.
    #[serde(default)]
    pub infer: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchMemoriesArgs {
    /// What to look for, in natural language.
    pub query: String,
    /// Only memories about this user.
    pub user_id: Option<String>,
    /// Only memories of this agent.
    pub agent_id: Option<String>,
    /// Only memories of this application.
    pub app_id: Option<String>,
    /// Only memories of this run.
    pub run_id: Option<String>,
    /// How many results, 1-100 (default 10).
    pub top_k: Option<usize>,
    /// More conditions in Mem0's filter grammar, e.g. {"categories": {"in": ["preferences"]}}.
    pub filters: Option<Map<String, Value>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMemoriesArgs {
    /// Only memories about this user.
    pub user_id: Option<String>,
    /// Only memories of this agent.
    pub agent_id: Option<String>,
    /// Only memories of this application.
    pub app_id: Option<String>,
    /// Only memories of this run.
    pub run_id: Option<String>,
    /// Page size, 1-1000 (default 50).
    pub limit: Option<usize>,
    /// How many to skip (default 0).
    #[serde(default)]
    pub offset: usize,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryIdArgs {
    /// The memory's id, as add_memory, search_memories or list_memories gave it.
    pub id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMemoryArgs {
    /// The memory's id.
    pub id: String,
    /// The new text (the history keeps the old one).
    pub text: Option<String>,
    /// Replaces the memory's metadata object.
    pub metadata: Option<Map<String, Value>>,
    /// Replaces the memory's categories.
    pub categories: Option<Vec<String>>,
    /// Moves the memory to another tier.
    pub tier: Option<TierArg>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchKnowledgeArgs {
    /// What to look for, in natural language or keywords.
    pub query: String,
    /// How many passages, 1-100 (default 10).
    pub top_k: Option<usize>,
    /// Only documents of this collection.
    pub collection: Option<String>,
    /// Only documents carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// hybrid (default), keyword or semantic.
    #[serde(default)]
    pub mode: ModeArg,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskArgs {
    /// The question.
    pub question: String,
    /// How many passages to answer from, 1-20 (default 5).
    pub top_k: Option<usize>,
    /// Only documents of this collection.
    pub collection: Option<String>,
}

/// A text format add_document parses.
#[derive(Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    Txt,
    Md,
    Html,
}

impl TextFormat {
    fn as_str(self) -> &'static str {
        match self {
            TextFormat::Txt => "txt",
            TextFormat::Md => "md",
            TextFormat::Html => "html",
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDocumentArgs {
    /// The document's text.
    pub text: String,
    /// A name for it: a file, path or URL. Adding the same source to the same collection replaces it.
    pub source: Option<String>,
    /// The document's title.
    pub title: Option<String>,
    /// The collection to put it in (default "default").
    pub collection: Option<String>,
    /// Labels to filter searches by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A JSON object kept with the document; its top-level scalar values can be filtered on.
    pub metadata: Option<Map<String, Value>>,
    /// txt (default unless the source's extension says otherwise), md or html.
    pub format: Option<TextFormat>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIdArgs {
    /// The document's id, as add_document or search_knowledge gave it.
    pub id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMeetingsArgs {
    /// Only meetings in this state: scheduled, live or ended.
    pub status: Option<MeetingStatusArg>,
    /// How many, 1-500 (default 50).
    pub limit: Option<usize>,
    /// The next_after of the previous page.
    pub after: Option<u64>,
}

/// A meeting's state.
#[derive(Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeetingStatusArg {
    Scheduled,
    Live,
    Ended,
}

impl From<MeetingStatusArg> for Status {
    fn from(status: MeetingStatusArg) -> Self {
        match status {
            MeetingStatusArg::Scheduled => Status::Scheduled,
            MeetingStatusArg::Live => Status::Live,
            MeetingStatusArg::Ended => Status::Ended,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeetingIdArgs {
    /// The meeting's id, as list_meetings or search_meetings gave it.
    pub id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchMeetingsArgs {
    /// What was said, in natural language or keywords.
    pub query: String,
    /// How many passages, 1-100 (default 10).
    pub top_k: Option<usize>,
    /// Only this meeting.
    pub meeting_id: Option<String>,
    /// Only passages where this speaker talks.
    pub speaker: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeetingTranscriptArgs {
    /// The meeting's id.
    pub id: String,
    /// text (default: "Speaker: text" lines), vtt, srt or json.
    pub format: Option<TranscriptArg>,
}

/// A transcript format.
#[derive(Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptArg {
    #[default]
    Text,
    Vtt,
    Srt,
    Json,
}

/// Who a change is attributed to in a memory's history: the key id, or `master` / `open`.
fn actor(ctx: &AuthContext) -> String {
    ctx.key_id().map_or_else(|| ctx.principal_name().to_string(), str::to_string)
}

/// How MCP reports an error of each code (an exhaustive match: a new code cannot go unmapped).
enum Class {
    /// The caller must change the request: a JSON-RPC error, nothing ran.
    Request,
    /// What happened to a well-formed request: a tool result with `isError`.
    Outcome,
    /// A failure of the system: a JSON-RPC internal error; the detail is logged.
    System,
}

fn class(code: ErrorCode) -> Class {
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidJson
        | ErrorCode::InvalidVector
        | ErrorCode::PayloadTooLarge
        | ErrorCode::UnsupportedFormat => Class::Request,
        ErrorCode::CorruptDocument
        | ErrorCode::NotFound
        | ErrorCode::RouteNotFound
        | ErrorCode::Conflict
        | ErrorCode::ReadOnly
        | ErrorCode::Unauthorized
        | ErrorCode::KeyExpired
        | ErrorCode::KeyRevoked
        | ErrorCode::Forbidden
        | ErrorCode::RateLimited
        | ErrorCode::MethodNotAllowed
        | ErrorCode::NotReady
        | ErrorCode::BackendUnavailable
        | ErrorCode::Overloaded
        | ErrorCode::EmbedderUnavailable
        | ErrorCode::LlmUnavailable
        | ErrorCode::LlmTimeout
        | ErrorCode::Timeout
        | ErrorCode::Cancelled
        | ErrorCode::ArchiveInvalid
        | ErrorCode::DiskFull => Class::Outcome,
        ErrorCode::ConfigInvalid
        | ErrorCode::EmbedderMismatch
        | ErrorCode::DataDirLocked
        | ErrorCode::DataDirFormatTooNew
        | ErrorCode::DataDirInvalid
        | ErrorCode::StoreFailure
        | ErrorCode::Internal => Class::System,
    }
}

fn error_data(e: &Error) -> Value {
    json!({"code": e.code.as_str(), "type": e.code.kind()})
}

fn system_error(e: &Error) -> ErrorData {
    tracing::error!(code = e.code.as_str(), error = %e, "mcp request failed");
    ErrorData::internal_error("internal error; the server log has the details", Some(error_data(e)))
}

/// A tool's answer: the value as structured content and text, or the error as [`Class`] says.
fn reply<T: Serialize>(result: Result<T>) -> Result<CallToolResult, ErrorData> {
    let e = match result.and_then(|v| serde_json::to_value(v).map_err(|e| Error::internal("encode result", e))) {
        Ok(value) => return Ok(CallToolResult::structured(value)),
        Err(e) => e,
    };
    match class(e.code) {
        Class::Request => Err(ErrorData::invalid_params(e.message.clone(), Some(error_data(&e)))),
        Class::Outcome => Ok(CallToolResult::structured_error(json!({
            "error": {"code": e.code.as_str(), "message": e.message, "type": e.code.kind()}
        }))),
        Class::System => Err(system_error(&e)),
    }
}

/// A resource read's error as a JSON-RPC error.
fn resource_error(e: Error) -> ErrorData {
    match (class(e.code), e.code) {
        (_, ErrorCode::NotFound) => ErrorData::resource_not_found(e.message.clone(), Some(error_data(&e))),
        (Class::Request, _) => ErrorData::invalid_params(e.message.clone(), Some(error_data(&e))),
        (Class::Outcome, _) => ErrorData::invalid_request(e.message.clone(), Some(error_data(&e))),
        (Class::System, _) => system_error(&e),
    }
}

fn check_top_k(top_k: Option<usize>, default: usize, max: usize) -> Result<usize> {
    let top_k = top_k.unwrap_or(default);
    if !(1..=max).contains(&top_k) {
        return Err(Error::invalid(format!("top_k must be between 1 and {max}")));
    }
    Ok(top_k)
}

fn scope(
    user_id: Option<String>,
    agent_id: Option<String>,
    app_id: Option<String>,
    run_id: Option<String>,
) -> Result<crate::memory::Scope> {
    crate::memory::Scope { user_id, agent_id, app_id, run_id }.normalized()
}

#[tool_router]
impl McpServer {
    pub fn new(app: Arc<App>, caller: Caller) -> McpServer {
        McpServer { app, caller, tool_router: Self::tool_router() }
    }

    /// The caller of this request, if it may do what `need` names.
    async fn caller(&self, extensions: &Extensions, need: Scope) -> Result<AuthContext> {
        let ctx = match &self.caller {
            Caller::PerRequest(find) => find(extensions)
                .ok_or_else(|| Error::internal("mcp", "the transport did not authenticate this request"))?,
            Caller::Key(key) => self.app.auth.authenticate(key.as_deref()).await?,
        };
        if !ctx.has(need) {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!("this key lacks the `{}` scope this needs; use a key that has it", need.as_str()),
            ));
        }
        Ok(ctx)
    }

    #[tool(
        description = "Remember something about a user, agent or run: one fact, preference or event per call, in plain \
                       words. Give at least one of user_id, agent_id, app_id, run_id (who or what it is about). Returns \
                       the stored memories with their ids (a near-duplicate of a memory of the same scope is merged \
                       into it instead).",
        annotations(
            title = "Add a memory",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn add_memory(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<AddMemoryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AddRequest {
            text: Some(args.text),
            user_id: args.user_id,
            agent_id: args.agent_id,
            app_id: args.app_id,
            run_id: args.run_id,
            metadata: args.metadata.map(Value::Object),
            infer: Some(args.infer),
            tier: args.tier.map(Into::into),
            categories: args.categories,
            ..AddRequest::default()
        };
        reply(self.app.memories.add(&ctx.tenant, request, &actor(&ctx)).await)
    }

    #[tool(
        description = "Find memories relevant to a question or topic, best first, each with a relevance score \
                       (0-1). Narrow by user_id, agent_id, app_id or run_id; use it before answering about the user. \
                       Returns {results: [memory + score], relations: [entity relations]}.",
        annotations(title = "Search memories", read_only_hint = true, open_world_hint = false)
    )]
    async fn search_memories(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<SearchMemoriesArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let app = &self.app;
        let run = async {
            let scope = scope(args.user_id, args.agent_id, args.app_id, args.run_id)?;
            let filters = Value::Object(args.filters.unwrap_or_default());
            let filter = scope_filter(&scope).and(Filter::parse(&filters)?);
            let options = SearchOptions {
                top_k: check_top_k(args.top_k, 10, 100)?,
                ..SearchOptions::configured(&app.config.memory)
            };
            app.memories.search(&ctx.tenant, &args.query, &filter, &options).await
        };
        reply(run.await)
    }

    #[tool(
        description = "List memories, oldest first, optionally only those of a user_id, agent_id, app_id or run_id. \
                       Returns {memories, total, offset}; page with offset and limit.",
        annotations(title = "List memories", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_memories(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<ListMemoriesArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let scope = scope(args.user_id, args.agent_id, args.app_id, args.run_id)?;
            let limit = args.limit.unwrap_or(50);
            if !(1..=1000).contains(&limit) {
                return Err(Error::invalid("limit must be between 1 and 1000"));
            }
            let request = ListRequest { filter: scope_filter(&scope), show_expired: false, offset: args.offset, limit };
            let (memories, total) = self.app.memories.list(&ctx.tenant, &request).await?;
            Ok(json!({"memories": memories, "total": total, "offset": args.offset}))
        };
        reply(run.await)
    }

    #[tool(
        description = "Read one memory by its id: its text, tier, scope, metadata, categories and times.",
        annotations(title = "Get a memory", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_memory(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<MemoryIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.app.memories.get(&ctx.tenant, &args.id).await)
    }

    #[tool(
        description = "Change a memory: its text (when a fact changed; the history keeps the old text), metadata, \
                       categories or tier. Give the id and at least one change. Returns the memory as it is now.",
        annotations(
            title = "Update a memory",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn update_memory(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<UpdateMemoryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if args.text.is_none() && args.metadata.is_none() && args.categories.is_none() && args.tier.is_none() {
            return reply::<()>(Err(Error::invalid("give at least one of text, metadata, categories, tier")));
        }
        let update = crate::memory::Update {
            text: args.text,
            metadata: args.metadata,
            tier: args.tier.map(Into::into),
            categories: args.categories,
            ..crate::memory::Update::default()
        };
        reply(self.app.memories.update(&ctx.tenant, &args.id, update, &actor(&ctx)).await)
    }

    #[tool(
        description = "Forget a memory for good (its history keeps a DELETE entry). Use when the user asks to forget \
                       something or a memory is wrong and not worth correcting.",
        annotations(
            title = "Delete a memory",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn delete_memory(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<MemoryIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let deleted = self.app.memories.delete(&ctx.tenant, &args.id, &actor(&ctx)).await;
        reply(deleted.map(|()| json!({"deleted": args.id})))
    }

    #[tool(
        description = "How a memory changed: every ADD, UPDATE and DELETE with the old and new text, who made it and \
                       when, oldest first. Works for deleted memories too.",
        annotations(title = "Memory history", read_only_hint = true, open_world_hint = false)
    )]
    async fn memory_history(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<MemoryIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let history = self.app.memories.history(&ctx.tenant, &args.id).await;
        reply(history.map(|history| json!({"history": history})))
    }

    #[tool(
        description = "Search the knowledge base (documents) for passages about a question or topic, best first: \
                       keyword and semantic rankings fused. Returns {results: [{document_id, chunk_id, title, source, \
                       collection, score, snippet, text}]}. To get an answer written from the passages, use ask.",
        annotations(title = "Search the knowledge base", read_only_hint = true, open_world_hint = false)
    )]
    async fn search_knowledge(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<SearchKnowledgeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let request = self.knowledge_request(
                &ctx,
                args.query,
                check_top_k(args.top_k, 10, 100)?,
                args.collection,
                args.tags,
                args.mode,
            )?;
            let search = &self.app.search;
            let (hits, _) = search.search_reranked(&request, search.wants_rerank(None)?).await?;
            let results: Vec<Value> = hits
                .into_iter()
                .map(|h| {
                    let m = &h.record.metadata;
                    json!({
                        "document_id": m.get("document_id"), "chunk_id": h.record.id, "title": h.record.title,
                        "source": m.get("source"), "collection": m.get("collection"), "score": h.score,
                        "snippet": h.snippet.text, "text": h.record.body,
                    })
                })
                .collect();
            Ok(json!({"results": results}))
        };
        reply(run.await)
    }

    #[tool(
        description = "Answer a question from the knowledge base, with numbered citations [n] of the passages used. \
                       Returns {answer, mode, citations: [{n, document_id, chunk_id, title, source, snippet}]}; mode \
                       is \"llm\" when a language model wrote the answer, \"extractive\" when the answer is the best \
                       passages themselves (no model configured).",
        annotations(title = "Ask the knowledge base", read_only_hint = true, open_world_hint = false)
    )]
    async fn ask(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<AskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        use futures::StreamExt;
        let run = async {
            let top_k = check_top_k(args.top_k, 5, 20)?;
            let request =
                self.knowledge_request(&ctx, args.question, top_k, args.collection, Vec::new(), ModeArg::Hybrid)?;
            let mut streamed =
                answer(&self.app.search, self.app.llm.clone(), request, self.app.search.wants_rerank(None)?).await?;
            let mut text = String::new();
            while let Some(piece) = streamed.text.next().await {
                text.push_str(&piece?);
            }
            let citations: Vec<Value> = streamed
                .citations
                .iter()
                .map(|c| {
                    json!({"n": c.n, "document_id": c.document_id, "chunk_id": c.chunk_id, "title": c.title,
                           "source": c.source, "snippet": c.snippet.text})
                })
                .collect();
            Ok(json!({"answer": text, "mode": streamed.mode, "citations": citations}))
        };
        reply(run.await)
    }

    #[tool(
        description = "Put a text into the knowledge base as a document (plain text, Markdown or HTML): it is split \
                       into passages and made searchable at once. Adding under the same source and collection \
                       replaces that document. Returns {documents: [{outcome: created|updated|unchanged, document}]}.",
        annotations(
            title = "Add a document",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn add_document(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<AddDocumentArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let limit = self.app.config.knowledge.max_upload_bytes;
            if args.text.len() as u64 > limit {
                return Err(Error::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the text is larger than knowledge.max_upload_bytes ({limit} bytes)"),
                ));
            }
            if args.text.trim().is_empty() {
                return Err(Error::invalid("text must not be empty"));
            }
            let source = args.source.unwrap_or_else(|| format!("mcp-{}", uuid::Uuid::now_v7()));
            let content_type = match args.format {
                Some(format) => Some(format.as_str().to_string()),
                None if source.contains('.') => None,
                None => Some("txt".to_string()),
            };
            let meta = DocumentMeta {
                source,
                collection: args.collection,
                title: args.title,
                tags: args.tags,
                metadata: args.metadata.unwrap_or_default(),
                content_type,
                ..DocumentMeta::default()
            };
            let documents = self.app.documents.ingest_bytes(&ctx.tenant, &meta, bytes::Bytes::from(args.text)).await?;
            Ok(json!({"documents": documents}))
        };
        reply(run.await)
    }

    #[tool(
        description = "Read one document's description by its id: title, source, collection, tags, format, size, \
                       number of passages, version and times.",
        annotations(title = "Get a document", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_document(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<DocumentIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.app.documents.get(&ctx.tenant, &args.id).await)
    }

    #[tool(
        description = "List meetings, oldest first, optionally only scheduled, live or ended ones. Returns \
                       {meetings: [{id, title, status, started_at, ended_at, participants, ...}], next_after}; pass \
                       next_after as after for the next page.",
        annotations(title = "List meetings", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_meetings(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<ListMeetingsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let limit = args.limit.unwrap_or(50);
            if !(1..=500).contains(&limit) {
                return Err(Error::invalid("limit must be between 1 and 500"));
            }
            let meetings = self.app.meetings.list(&ctx.tenant, args.status.map(Into::into), args.after, limit).await?;
            let next_after = if meetings.len() == limit { meetings.last().map(|m| m.key) } else { None };
            Ok(json!({"meetings": meetings, "next_after": next_after}))
        };
        reply(run.await)
    }

    #[tool(
        description = "Read one meeting by its id: title, status, times, participants, its summary (rolling while it \
                       runs, final once ended) and its insights (action items with owner and due date, decisions, \
                       open questions, topics), each insight with the segments it came from.",
        annotations(title = "Get a meeting", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_meeting(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<MeetingIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let meetings = &self.app.meetings;
            let meeting = meetings.get(&ctx.tenant, &args.id).await?;
            let summary = meetings.summary(&ctx.tenant, &args.id).await?;
            let insights = meetings.insights(&ctx.tenant, &args.id, None).await?;
            Ok(json!({"meeting": meeting, "summary": summary, "insights": insights}))
        };
        reply(run.await)
    }

    #[tool(
        description = "Search what was said in meetings, best first: passages of consecutive turns, keyword and \
                       semantic rankings fused. Narrow to one meeting_id or a speaker. Returns {results: [{meeting_id, \
                       seq_start, seq_end, speakers, score, snippet, text}]}; read more around a passage with \
                       get_meeting_transcript.",
        annotations(title = "Search meetings", read_only_hint = true, open_world_hint = false)
    )]
    async fn search_meetings(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<SearchMeetingsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let mut filter = RecordFilter { kinds: vec![MEETING_CHUNK_KIND.to_string()], ..RecordFilter::default() };
            if let Some(id) = args.meeting_id {
                filter.metadata.push(("meeting_id".to_string(), id));
            }
            if let Some(speaker) = args.speaker.filter(|s| !s.trim().is_empty()) {
                filter.tags.push(speaker_tag(&speaker));
            }
            let request = SearchRequest {
                tenant: ctx.tenant.clone(),
                query: args.query,
                mode: ModeArg::Hybrid.into(),
                filter,
                top_k: check_top_k(args.top_k, 10, 100)?,
                offset: 0,
                fusion: Fusion::for_documents(&self.app.config.knowledge),
                snippets: true,
            };
            let search = &self.app.search;
            let (hits, _) = search.search_reranked(&request, search.wants_rerank(None)?).await?;
            let results: Vec<Value> = hits
                .into_iter()
                .map(|h| {
                    let m = &h.record.metadata;
                    json!({
                        "meeting_id": m.get("meeting_id"), "seq_start": m.get("seq_start"),
                        "seq_end": m.get("seq_end"), "speakers": m.get("speakers"), "title": h.record.title,
                        "score": h.score, "snippet": h.snippet.text, "text": h.record.body,
                    })
                })
                .collect();
            Ok(json!({"results": results}))
        };
        reply(run.await)
    }

    #[tool(
        description = "Read a meeting's transcript: its final segments in order, as \"Speaker: text\" lines (default), \
                       WebVTT, SRT or JSON. Returns {meeting_id, format, transcript}.",
        annotations(title = "Get a meeting's transcript", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_meeting_transcript(
        &self,
        Extension(ctx): Extension<AuthContext>,
        Parameters(args): Parameters<MeetingTranscriptArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let (format, name) = match args.format.unwrap_or_default() {
                TranscriptArg::Text => (TranscriptFormat::Text, "text"),
                TranscriptArg::Vtt => (TranscriptFormat::Vtt, "vtt"),
                TranscriptArg::Srt => (TranscriptFormat::Srt, "srt"),
                TranscriptArg::Json => (TranscriptFormat::Json, "json"),
            };
            let meeting = self.app.meetings.get(&ctx.tenant, &args.id).await?;
            let segments = self.app.meetings.segments(&ctx.tenant, &args.id).await?;
            Ok(json!({"meeting_id": args.id, "format": name, "transcript": render(format, &meeting, &segments)}))
        };
        reply(run.await)
    }
}

impl McpServer {
    /// A search of the knowledge base's passages for `ctx`'s tenant.
    fn knowledge_request(
        &self,
        ctx: &AuthContext,
        query: String,
        top_k: usize,
        collection: Option<String>,
        tags: Vec<String>,
        mode: ModeArg,
    ) -> Result<SearchRequest> {
        let mut metadata = Vec::new();
        if let Some(collection) = collection {
            validate_name("collection", &collection)?;
            metadata.push(("collection".to_string(), collection));
        }
        Ok(SearchRequest {
            tenant: ctx.tenant.clone(),
            query,
            mode: mode.into(),
            filter: RecordFilter { kinds: vec![CHUNK_KIND.to_string()], tags, metadata, ..RecordFilter::default() },
            top_k,
            offset: 0,
            fusion: Fusion::for_documents(&self.app.config.knowledge),
            snippets: true,
        })
    }

    /// The JSON of the resource at `uri`, for `ctx`'s tenant.
    async fn resource(&self, ctx: &AuthContext, uri: &str) -> Result<Value> {
        let to_json = |v: std::result::Result<Value, serde_json::Error>| v.map_err(|e| Error::internal("encode", e));
        if let Some(id) = uri.strip_prefix("nexus://memories/").filter(|id| !id.is_empty()) {
            return to_json(serde_json::to_value(self.app.memories.get(&ctx.tenant, id).await?));
        }
        if let Some(id) = uri.strip_prefix("nexus://documents/").filter(|id| !id.is_empty()) {
            return to_json(serde_json::to_value(self.app.documents.get(&ctx.tenant, id).await?));
        }
        Err(Error::new(
            ErrorCode::NotFound,
            format!("no resource {uri:?}: Nexus serves {MEMORY_URI} and {DOCUMENT_URI}"),
        ))
    }
}

/// Whether results may be cached by clients speaking a version that knows cache hints.
fn knows_cache_hints(context: &RequestContext<RoleServer>) -> bool {
    context.protocol_version().is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(
                Implementation::new("nexus", env!("CARGO_PKG_VERSION"))
                    .with_title("Nexus")
                    .with_description("Long-term memory and a knowledge base for AI agents"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = self.tool_router.get(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`; tools/list names the tools this server has", request.name),
                Some(json!({"code": ErrorCode::InvalidRequest.as_str()})),
            ));
        };
        // The annotation is the contract: a read-only tool needs `read`, every other `write`.
        let read_only = tool.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true);
        let need = if read_only { Scope::Read } else { Scope::Write };
        let ctx = match self.caller(&context.extensions, need).await {
            Ok(ctx) => ctx,
            Err(e) => return reply::<()>(Err(e)).map(Into::into),
        };
        context.extensions.insert(ctx);
        self.tool_router.call(ToolCallContext::new(self, request, context)).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let json = "application/json";
        let mut result = ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(MEMORY_URI, "memory")
                .with_title("A memory")
                .with_description("One memory by id: text, tier, scope, metadata, categories, times")
                .with_mime_type(json),
            ResourceTemplate::new(DOCUMENT_URI, "document")
                .with_title("A document")
                .with_description("One document of the knowledge base by id: title, source, collection, tags, size")
                .with_mime_type(json),
        ]);
        if knows_cache_hints(&context) {
            result.ttl_ms = Some(0);
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let ctx = self.caller(&context.extensions, Scope::Read).await.map_err(resource_error)?;
        let value = self.resource(&ctx, &request.uri).await.map_err(resource_error)?;
        let text = serde_json::to_string_pretty(&value).map_err(|e| resource_error(Error::internal("encode", e)))?;
        let contents = ResourceContents::text(text, request.uri).with_mime_type("application/json");
        let mut result = ReadResourceResult::new(vec![contents]);
        if knows_cache_hints(&context) {
            // Another key may see something else at the same URI: never shared, always re-read.
            result = result.with_ttl_ms(0).with_cache_scope(CacheScope::Private);
        }
        Ok(result.into())
    }
}
