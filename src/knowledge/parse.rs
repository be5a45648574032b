//! Parsing: uploaded bytes → structured text.
//!
//! Contract:
//! - [`Format::detect`] decides the format from the file name's extension, else the content type,
//!   else magic bytes (`%PDF-`, a ZIP holding `word/document.xml`). Nothing else is guessed.
//! - [`parse`] returns one [`ParsedDoc`] per document: one for every format except `.json` (an
//!   object, or an array of objects) and `.jsonl` (one object per line), which give one per record.
//! - A document is a title, a flat list of [`Block`]s in reading order, and scalar metadata. Block
//!   text is clean: no NUL or other control characters, whitespace collapsed to single spaces
//!   (code and tables keep their line breaks), never empty.
//! - It never panics, whatever the bytes: an unreadable file is [`ErrorCode::CorruptDocument`]
//!   naming the format and what failed, and so is a document with no text at all (a scanned PDF).
//!   A DOCX that expands past [`MAX_DOCX_XML_BYTES`] is [`ErrorCode::PayloadTooLarge`].
//! - It is blocking, CPU-bound work: async callers run it with `store::blocking`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorCode, Result};

/// Most XML read out of one DOCX (all parts together): a zip bomb stops here, not in memory.
pub const MAX_DOCX_XML_BYTES: u64 = 200 * 1024 * 1024;
/// HTML elements nested deeper than this lose their structure (their text is kept as one run),
/// so a hostile page cannot exhaust the stack. JSON is bounded by serde_json's limit of 128.
const MAX_HTML_DEPTH: usize = 256;
/// The PDF parser recurses over the file's object graph; it gets a thread with this much stack.
const PDF_STACK_BYTES: usize = 64 * 1024 * 1024;
/// Text fields tried, in order, when [`ParseOptions::json_text_field`] is not set.
const JSON_TEXT_FIELDS: [&str; 3] = ["text", "content", "body"];
const JSON_TITLE_FIELDS: [&str; 2] = ["title", "name"];

/// A document format Nexus can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Json,
    Jsonl,
}

impl Format {
    pub const ALL: [Format; 7] =
        [Format::Text, Format::Markdown, Format::Html, Format::Pdf, Format::Docx, Format::Json, Format::Jsonl];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
        }
    }

    /// The format of an upload: the extension of `file_name` if it is a known one, else the
    /// content type (`text/*` counts as plain text), else the magic bytes of `bytes`.
    pub fn detect(file_name: &str, content_type: Option<&str>, bytes: &[u8]) -> Option<Format> {
        let extension = file_name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase());
        extension
            .as_deref()
            .and_then(Format::from_extension)
            .or_else(|| content_type.and_then(Format::from_content_type))
            .or_else(|| Format::from_magic(bytes))
    }

    /// [`Format::detect`], with an [`ErrorCode::UnsupportedFormat`] error when nothing matches.
    pub fn detect_or_error(file_name: &str, content_type: Option<&str>, bytes: &[u8]) -> Result<Format> {
        Format::detect(file_name, content_type, bytes).ok_or_else(|| {
            let name = if file_name.is_empty() { "this file".to_string() } else { format!("`{file_name}`") };
            Error::new(
                ErrorCode::UnsupportedFormat,
                format!(
                    "{name} is not a supported document; supported extensions: \
                     .txt, .md, .markdown, .html, .htm, .pdf, .docx, .json, .jsonl, .ndjson"
                ),
            )
        })
    }

    fn from_extension(extension: &str) -> Option<Format> {
        Some(match extension {
            "txt" | "text" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" | "xhtml" => Format::Html,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::Jsonl,
            _ => return None,
        })
    }

    fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        Some(match essence.as_str() {
            "text/markdown" | "text/x-markdown" => Format::Markdown,
            "text/html" | "application/xhtml+xml" => Format::Html,
            "application/pdf" => Format::Pdf,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Format::Docx,
            "application/json" => Format::Json,
            "application/jsonl" | "application/x-ndjson" | "application/ndjson" | "application/json-lines" => {
                Format::Jsonl
            }
            other if other.starts_with("text/") => Format::Text,
            _ => return None,
        })
    }

    fn from_magic(bytes: &[u8]) -> Option<Format> {
        // PDF readers accept the header anywhere in the first KiB; so do we.
        let head = &bytes[..bytes.len().min(1024)];
        if head.windows(5).any(|w| w == b"%PDF-") {
            return Some(Format::Pdf);
        }
        if bytes.starts_with(b"PK\x03\x04") {
            let zip = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
            if zip.index_for_name("word/document.xml").is_some() {
                return Some(Format::Docx);
            }
        }
        None
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One document's text, in reading order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedDoc {
    pub title: Option<String>,
    pub blocks: Vec<Block>,
    /// Scalars found in the file: front matter, `<meta>`, PDF and DOCX properties, JSON fields.
    pub metadata: Map<String, Value>,
}

impl ParsedDoc {
    /// All block text, blocks separated by a blank line.
    pub fn text(&self) -> String {
        self.blocks.iter().map(|b| b.text.as_str()).collect::<Vec<_>>().join("\n\n")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub kind: BlockKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Level 1 to 6.
    Heading(u8),
    Paragraph,
    ListItem,
    /// Keeps its line breaks.
    Code,
    /// One line per row, cells separated by ` | `.
    Table,
    Quote,
}

#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    /// The field of a JSON/JSONL record that holds its text; by default the first present of
    /// `text`, `content`, `body`.
    pub json_text_field: Option<String>,
}

/// Parse `bytes` as `format`. See the module docs for the contract.
pub fn parse(format: Format, bytes: &[u8], options: &ParseOptions) -> Result<Vec<ParsedDoc>> {
    let docs = match format {
        Format::Text => vec![parse_text(&decode_text(format, bytes)?)],
        Format::Markdown => vec![parse_markdown(&decode_text(format, bytes)?)],
        Format::Html => vec![parse_html(&decode_text(format, bytes)?)],
        Format::Pdf => vec![parse_pdf(bytes)?],
        Format::Docx => vec![parse_docx(bytes)?],
        Format::Json => parse_json(&decode_text(format, bytes)?, options)?,
        Format::Jsonl => parse_jsonl(&decode_text(format, bytes)?, options)?,
    };
    if docs.is_empty() {
        return Err(corrupt(format, "it holds no records"));
    }
    if docs.iter().any(|d| d.blocks.is_empty()) {
        let hint = if format == Format::Pdf { " (a scanned pdf needs OCR, which nexus does not do)" } else { "" };
        return Err(corrupt(format, format!("it has no extractable text{hint}")));
    }
    Ok(docs)
}

fn corrupt(format: Format, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::CorruptDocument, format!("cannot read this {format} file: {what}"))
}

// ---------------------------------------------------------------------------------------------
// Text and its cleaning, shared by every format

/// Decode a text-like file: a UTF-8 (or UTF-16) byte-order mark is dropped, invalid UTF-8 is
/// replaced, line ends become `\n`. A file that is mostly not text is refused rather than indexed
/// as replacement characters.
fn decode_text(format: Format, bytes: &[u8]) -> Result<String> {
    let text = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        String::from_utf8_lossy(rest)
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        Cow::Owned(utf16(rest, u16::from_le_bytes))
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        Cow::Owned(utf16(rest, u16::from_be_bytes))
    } else {
        String::from_utf8_lossy(bytes)
    };
    let (mut total, mut garbage) = (0usize, 0usize);
    for c in text.chars() {
        total += 1;
        if c == char::REPLACEMENT_CHARACTER || (c.is_control() && !c.is_whitespace()) {
            garbage += 1;
        }
    }
    if garbage * 10 > total {
        return Err(corrupt(format, "it is not UTF-8 text (it looks like a binary file)"));
    }
    Ok(text.replace("\r\n", "\n").replace('\r', "\n"))
}

fn utf16(bytes: &[u8], decode: fn([u8; 2]) -> u16) -> String {
    let units: Vec<u16> = bytes.chunks_exact(2).map(|pair| decode([pair[0], pair[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// Characters that carry no text: controls (but line breaks and tabs, which are whitespace),
/// byte-order marks, soft hyphens and zero-width spaces (common in PDF and Word output).
fn is_noise(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\t' | '\r')) || matches!(c, '\u{FEFF}' | '\u{00AD}' | '\u{200B}')
}

/// Block text as stored: code keeps its lines and indentation, tables keep one line per row, all
/// else is one line with whitespace collapsed.
fn clean(raw: &str, kind: BlockKind) -> String {
    let text: String = raw.chars().filter(|&c| !is_noise(c)).map(|c| if c == '\r' { '\n' } else { c }).collect();
    match kind {
        BlockKind::Code => {
            let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
            let first = lines.iter().position(|l| !l.is_empty()).unwrap_or(lines.len());
            let last = lines.iter().rposition(|l| !l.is_empty()).map_or(first, |i| i + 1);
            lines[first..last].join("\n")
        }
        BlockKind::Table => text.lines().map(collapse).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n"),
        _ => collapse(&text),
    }
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Collects blocks: inline text goes into `buf`, and a block boundary flushes it as some kind.
#[derive(Default)]
struct Blocks {
    blocks: Vec<Block>,
    buf: String,
}

impl Blocks {
    fn flush(&mut self, kind: BlockKind) {
        let text = clean(&self.buf, kind);
        self.buf.clear();
        self.push(kind, text);
    }

    fn push(&mut self, kind: BlockKind, text: String) {
        if !text.is_empty() {
            self.blocks.push(Block { kind, text });
        }
    }

    fn first_heading(&self) -> Option<String> {
        self.blocks.iter().find(|b| b.kind == BlockKind::Heading(1)).map(|b| b.text.clone())
    }
}

/// Paragraphs of plain text: separated by blank lines; the lines inside one are joined.
fn paragraphs(text: &str, out: &mut Blocks) {
    for line in text.lines() {
        if line.trim().is_empty() {
            out.flush(BlockKind::Paragraph);
        } else {
            out.buf.push_str(line);
            out.buf.push('\n');
        }
    }
    out.flush(BlockKind::Paragraph);
}

fn parse_text(text: &str) -> ParsedDoc {
    let mut out = Blocks::default();
    paragraphs(text, &mut out);
    ParsedDoc { title: None, blocks: out.blocks, metadata: Map::new() }
}

// ---------------------------------------------------------------------------------------------
// Markdown (CommonMark + tables, via pulldown-cmark's event stream: no recursion of ours)

fn parse_markdown(text: &str) -> ParsedDoc {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut out = Blocks::default();
    let mut metadata = Map::new();
    // The list items and quotes we are inside: a paragraph takes the innermost one's kind.
    let mut containers: Vec<BlockKind> = Vec::new();
    let mut in_front_matter = false;
    let (mut rows, mut row): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());

    for event in Parser::new_ext(text, options) {
        let leaf = containers.last().copied().unwrap_or(BlockKind::Paragraph);
        match event {
            Event::Start(Tag::Item) => {
                out.flush(leaf);
                containers.push(BlockKind::ListItem);
            }
            Event::Start(Tag::BlockQuote(_)) => {
                out.flush(leaf);
                containers.push(BlockKind::Quote);
            }
            Event::End(TagEnd::Item | TagEnd::BlockQuote(_)) => {
                out.flush(leaf);
                containers.pop();
            }
            Event::Start(Tag::Heading { .. } | Tag::Paragraph | Tag::CodeBlock(_) | Tag::List(_) | Tag::Table(_)) => {
                out.flush(leaf);
            }
            Event::End(TagEnd::Heading(level)) => out.flush(BlockKind::Heading(level as u8)),
            Event::End(TagEnd::Paragraph) | Event::Rule => out.flush(leaf),
            Event::End(TagEnd::CodeBlock) => out.flush(BlockKind::Code),
            Event::End(TagEnd::TableCell) => {
                row.push(clean(&out.buf, BlockKind::Paragraph));
                out.buf.clear();
            }
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => rows.push(std::mem::take(&mut row).join(" | ")),
            Event::End(TagEnd::Table) => {
                out.push(BlockKind::Table, clean(&std::mem::take(&mut rows).join("\n"), BlockKind::Table))
            }
            Event::Start(Tag::MetadataBlock(_)) => in_front_matter = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_front_matter = false,
            Event::Text(t) if in_front_matter => front_matter(&t, &mut metadata),
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => out.buf.push_str(&t),
            Event::SoftBreak | Event::HardBreak => out.buf.push('\n'),
            // Raw HTML is markup, not text; footnote markers and task boxes carry no words.
            _ => {}
        }
    }
    out.flush(BlockKind::Paragraph);
    let title = match metadata.remove("title") {
        Some(Value::String(title)) => Some(title),
        _ => out.first_heading(),
    };
    ParsedDoc { title, blocks: out.blocks, metadata }
}

/// The `key: value` lines of YAML front matter (nested YAML is not interpreted).
fn front_matter(text: &str, metadata: &mut Map<String, Value>) {
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let (key, value) = (key.trim(), clean(value.trim().trim_matches(['"', '\'']), BlockKind::Paragraph));
        if !key.is_empty() && !key.starts_with([' ', '-', '#']) && !value.is_empty() {
            metadata.insert(key.to_string(), Value::String(value));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTML (html5ever via scraper: browsers' parsing rules, so broken markup still yields its text)

/// Never text: scripts, styles, navigation and form controls.
const HTML_SKIPPED: [&str; 15] = [
    "head", "script", "style", "noscript", "template", "nav", "iframe", "object", "embed", "svg", "canvas", "math",
    "button", "select", "textarea",
];
/// Elements that end the text before them and start a new block.
const HTML_BLOCKS: [&str; 28] = [
    "html",
    "body",
    "main",
    "article",
    "section",
    "div",
    "p",
    "header",
    "footer",
    "aside",
    "address",
    "ul",
    "ol",
    "menu",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "legend",
    "details",
    "summary",
    "hr",
    "center",
    "caption",
    "td",
];

fn parse_html(text: &str) -> ParsedDoc {
    let html = scraper::Html::parse_document(text);
    let root = html.root_element();
    let mut walker = HtmlWalker::default();
    walker.walk(*root, 0);
    walker.out.flush(walker.leaf());

    let mut metadata = Map::new();
    let mut title = None;
    for element in root.descendent_elements() {
        let e = element.value();
        match e.name() {
            "title" if title.is_none() => {
                title = Some(clean(&element.text().collect::<String>(), BlockKind::Paragraph))
            }
            "meta" => {
                if let (Some(name @ ("description" | "author" | "keywords")), Some(content)) =
                    (e.attr("name"), e.attr("content"))
                {
                    metadata.insert(name.to_string(), Value::String(clean(content, BlockKind::Paragraph)));
                }
            }
            _ => {}
        }
    }
    if let Some(lang) = root.value().attr("lang") {
        metadata.insert("lang".to_string(), Value::String(lang.to_string()));
    }
    let title = title.filter(|t| !t.is_empty()).or_else(|| walker.out.first_heading());
    ParsedDoc { title, blocks: walker.out.blocks, metadata }
}

#[derive(Default)]
struct HtmlWalker {
    out: Blocks,
    /// The list items and quotes we are inside, as in Markdown.
    containers: Vec<BlockKind>,
}

type HtmlNode<'a> = ego_tree::NodeRef<'a, scraper::Node>;

impl HtmlWalker {
    fn leaf(&self) -> BlockKind {
        self.containers.last().copied().unwrap_or(BlockKind::Paragraph)
    }

    fn walk(&mut self, node: HtmlNode<'_>, depth: usize) {
        for child in node.children() {
            match child.value() {
                scraper::Node::Text(text) => self.out.buf.push_str(text),
                scraper::Node::Element(_) => self.element(child, depth + 1),
                _ => {}
            }
        }
    }

    fn element(&mut self, node: HtmlNode<'_>, depth: usize) {
        let Some(e) = node.value().as_element() else { return };
        let name = e.name();
        if HTML_SKIPPED.contains(&name) || e.attr("hidden").is_some() || e.attr("aria-hidden") == Some("true") {
            return;
        }
        if depth > MAX_HTML_DEPTH {
            // Too deep to walk by recursion: keep the words, drop the structure.
            self.out.buf.push(' ');
            self.out.buf.push_str(&text_of(node));
            return;
        }
        let leaf = self.leaf();
        match name {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.out.flush(leaf);
                self.walk(node, depth);
                self.out.flush(BlockKind::Heading(name.as_bytes()[1] - b'0'));
            }
            "li" | "blockquote" => {
                let kind = if name == "li" { BlockKind::ListItem } else { BlockKind::Quote };
                self.out.flush(leaf);
                self.containers.push(kind);
                self.walk(node, depth);
                self.out.flush(kind);
                self.containers.pop();
            }
            "pre" => {
                self.out.flush(leaf);
                self.out.push(BlockKind::Code, clean(&text_of(node), BlockKind::Code));
            }
            "table" => {
                self.out.flush(leaf);
                let mut rows = Vec::new();
                table_rows(node, &mut rows);
                self.out.push(BlockKind::Table, clean(&rows.join("\n"), BlockKind::Table));
            }
            "br" => self.out.buf.push('\n'),
            _ if HTML_BLOCKS.contains(&name) => {
                self.out.flush(leaf);
                self.walk(node, depth);
                self.out.flush(leaf);
            }
            _ => self.walk(node, depth),
        }
    }
}

/// All text under `node`, iteratively (no recursion, whatever the depth).
fn text_of(node: HtmlNode<'_>) -> String {
    node.descendants().filter_map(|d| d.value().as_text().map(|t| &**t)).collect()
}

/// One line per `<tr>`, cells joined by ` | `. A table nested in a cell is flattened into the cell.
fn table_rows(node: HtmlNode<'_>, rows: &mut Vec<String>) {
    for child in node.children() {
        let Some(e) = child.value().as_element() else { continue };
        match e.name() {
            "thead" | "tbody" | "tfoot" => table_rows(child, rows),
            "caption" => rows.push(clean(&text_of(child), BlockKind::Paragraph)),
            "tr" => {
                let cells: Vec<String> = child
                    .children()
                    .filter(|c| c.value().as_element().is_some_and(|e| matches!(e.name(), "td" | "th")))
                    .map(|c| clean(&text_of(c), BlockKind::Paragraph))
                    .collect();
                rows.push(cells.join(" | "));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PDF (pdf-extract over lopdf: fonts' encodings and ToUnicode maps are honoured)

fn parse_pdf(bytes: &[u8]) -> Result<ParsedDoc> {
    // lopdf recurses over the object graph and pdf-extract has panicking paths: a hostile file
    // gets a thread of its own with a large stack, and a panic there is a corrupt file, not ours.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("nexus-pdf".into())
            .stack_size(PDF_STACK_BYTES)
            .spawn_scoped(scope, || extract_pdf(bytes))
            .map_err(|e| Error::internal("start the pdf parser", e))?;
        worker.join().unwrap_or_else(|_| Err(corrupt(Format::Pdf, "the pdf parser failed on its content")))
    })
}

fn extract_pdf(bytes: &[u8]) -> Result<ParsedDoc> {
    let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| corrupt(Format::Pdf, e))?;
    if doc.is_encrypted() {
        // Many PDFs are "encrypted" with an empty user password only to restrict printing.
        doc.decrypt("").map_err(|_| corrupt(Format::Pdf, "it is encrypted with a password"))?;
    }
    let pages = doc.get_pages();
    let mut out = Blocks::default();
    let mut unreadable = 0;
    for &page in pages.keys() {
        let mut text = String::new();
        // pdf-extract asserts on malformed content streams and fonts: a page it panics on is
        // skipped like one it returns an error for, and the other pages are kept.
        let extracted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pdf_extract::output_doc_page(&doc, &mut pdf_extract::PlainTextOutput::new(&mut text), page)
        }));
        match extracted {
            // A page break always ends a paragraph: `paragraphs` flushes at the end.
            Ok(Ok(())) => paragraphs(&text, &mut out),
            _ => unreadable += 1,
        }
    }
    if out.blocks.is_empty() && unreadable > 0 {
        return Err(corrupt(Format::Pdf, format!("none of its {} pages could be read", pages.len())));
    }
    let mut metadata = Map::new();
    metadata.insert("pages".to_string(), Value::from(pages.len()));
    if unreadable > 0 {
        metadata.insert("unreadable_pages".to_string(), Value::from(unreadable));
    }
    for (key, name) in [(&b"Author"[..], "author"), (b"Subject", "subject")] {
        if let Some(value) = pdf_info(&doc, key) {
            metadata.insert(name.to_string(), Value::String(value));
        }
    }
    Ok(ParsedDoc { title: pdf_info(&doc, b"Title"), blocks: out.blocks, metadata })
}

/// A text entry of the document information dictionary.
fn pdf_info(doc: &pdf_extract::Document, key: &[u8]) -> Option<String> {
    let (_, info) = doc.dereference(doc.trailer.get(b"Info").ok()?).ok()?;
    let (_, value) = doc.dereference(info.as_dict().ok()?.get(key).ok()?).ok()?;
    let bytes = value.as_str().ok()?;
    // A PDF text string is UTF-16BE with a byte-order mark, UTF-8 with one, or PDFDocEncoding
    // (Latin-1 for the letters that matter).
    let text = if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        utf16(rest, u16::from_be_bytes)
    } else if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        bytes.iter().map(|&b| b as char).collect()
    };
    Some(clean(&text, BlockKind::Paragraph)).filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------------------------
// DOCX (zip + quick-xml over word/document.xml, streaming: depth costs no stack). The main body
// only: headers, footers, footnotes and comments live in other parts and are not read.

fn parse_docx(bytes: &[u8]) -> Result<ParsedDoc> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt(Format::Docx, format!("it is not a readable zip archive ({e})")))?;
    let mut budget = MAX_DOCX_XML_BYTES;
    let body = zip_text(&mut zip, "word/document.xml", &mut budget)?
        .ok_or_else(|| corrupt(Format::Docx, "it has no word/document.xml (is it a word document?)"))?;
    let styles = zip_text(&mut zip, "word/styles.xml", &mut budget)?.map(|xml| docx_styles(&xml)).unwrap_or_default();
    let properties = zip_text(&mut zip, "docProps/core.xml", &mut budget)?.map(|xml| docx_properties(&xml));
    let (blocks, title_paragraph) = docx_body(&body, &styles)?;

    let mut metadata = Map::new();
    let mut title = None;
    for (key, value) in properties.unwrap_or_default() {
        match key {
            "title" => title = Some(value),
            _ => drop(metadata.insert(key.to_string(), Value::String(value))),
        }
    }
    let first_heading = || blocks.iter().find(|b| b.kind == BlockKind::Heading(1)).map(|b| b.text.clone());
    let title = title.or(title_paragraph).or_else(first_heading);
    Ok(ParsedDoc { title, blocks, metadata })
}

/// A zip entry as UTF-8, charged to `budget`: both the declared size and the bytes actually
/// inflated are checked, so a lying header cannot get past the cap.
fn zip_text(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str, budget: &mut u64) -> Result<Option<String>> {
    let too_large = || {
        Error::new(
            ErrorCode::PayloadTooLarge,
            format!("docx expands to more than {} MiB of text; nexus reads at most that", MAX_DOCX_XML_BYTES >> 20),
        )
    };
    let entry = match zip.by_name(name) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(corrupt(Format::Docx, format!("cannot open {name} ({e})"))),
    };
    if entry.size() > *budget {
        return Err(too_large());
    }
    let mut data = Vec::new();
    entry
        .take(*budget + 1)
        .read_to_end(&mut data)
        .map_err(|e| corrupt(Format::Docx, format!("cannot inflate {name} ({e})")))?;
    if data.len() as u64 > *budget {
        return Err(too_large());
    }
    *budget -= data.len() as u64;
    String::from_utf8(data).map(Some).map_err(|_| corrupt(Format::Docx, format!("{name} is not UTF-8")))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StyleRole {
    Heading(u8),
    Title,
    List,
}

/// Paragraph style id → role, from the style's built-in English name ("heading 1", "Title",
/// "List Bullet"), which Word keeps whatever the display language; or its outline level.
fn docx_styles(xml: &str) -> HashMap<String, StyleRole> {
    use quick_xml::events::Event;
    let mut roles = HashMap::new();
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut id: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => match e.local_name().as_ref() {
                "style" => id = xml_attr(&e, "styleId"),
                "name" => {
                    let name = xml_attr(&e, "val").unwrap_or_default().to_ascii_lowercase();
                    let role = match name.strip_prefix("heading ").map(str::parse::<u8>) {
                        Some(Ok(level)) => Some(StyleRole::Heading(level.clamp(1, 6))),
                        _ if name == "title" => Some(StyleRole::Title),
                        _ if name.starts_with("list") => Some(StyleRole::List),
                        _ => None,
                    };
                    if let (Some(id), Some(role)) = (&id, role) {
                        roles.insert(id.clone(), role);
                    }
                }
                "outlineLvl" => {
                    if let (Some(id), Some(Ok(level))) = (&id, xml_attr(&e, "val").map(|v| v.parse::<u8>())) {
                        // Level 9 means "body text".
                        if level < 9 {
                            roles.entry(id.clone()).or_insert(StyleRole::Heading((level + 1).min(6)));
                        }
                    }
                }
                _ => {}
            },
            Ok(Event::End(e)) if e.local_name().as_ref() == "style" => id = None,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    roles
}

/// A style id's role when styles.xml does not say: the ids Word gives English built-in styles.
fn style_role_by_id(id: &str) -> Option<StyleRole> {
    let lower = id.to_ascii_lowercase();
    match lower.strip_prefix("heading").map(str::parse::<u8>) {
        Some(Ok(level)) => Some(StyleRole::Heading(level.clamp(1, 6))),
        _ if lower == "title" => Some(StyleRole::Title),
        _ if lower.starts_with("list") => Some(StyleRole::List),
        _ => None,
    }
}

/// `dc:title` and `dc:creator` of docProps/core.xml, as ("title" | "author", value).
fn docx_properties(xml: &str) -> Vec<(&'static str, String)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut current: Option<&'static str> = None;
    let mut found = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                current = match e.local_name().as_ref() {
                    "title" => Some("title"),
                    "creator" => Some("author"),
                    _ => None,
                }
            }
            Ok(Event::Text(t)) => {
                if let Some(key) = current {
                    let value = clean(&t.xml10_content(), BlockKind::Paragraph);
                    if !value.is_empty() {
                        found.push((key, value));
                    }
                }
            }
            Ok(Event::End(_)) => current = None,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    found
}

fn xml_attr(e: &quick_xml::events::BytesStart<'_>, local_name: &str) -> Option<String> {
    e.attributes().flatten().find(|a| a.key.local_name().as_ref() == local_name).map(|a| a.value.into_owned())
}

/// The body's blocks, and the text of a paragraph in the Title style if there is one.
fn docx_body(xml: &str, styles: &HashMap<String, StyleRole>) -> Result<(Vec<Block>, Option<String>)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Blocks::default();
    let mut title = None;
    // Paragraphs nest (a text box inside a paragraph): the inner ones join the outer one.
    let mut paragraph_depth = 0usize;
    let (mut style, mut numbered, mut outline): (Option<String>, bool, Option<u8>) = (None, false, None);
    let mut in_text = false;
    // `mc:Fallback` repeats what `mc:Choice` holds, for old readers: skipped.
    let mut fallback_depth = 0usize;
    // Tables nest too: an inner table's text joins the outer cell.
    let mut table_depth = 0usize;
    let (mut rows, mut row, mut cell) = (Vec::<String>::new(), Vec::<String>::new(), String::new());

    loop {
        let event = reader.read_event().map_err(|e| {
            corrupt(
                Format::Docx,
                format!("word/document.xml is not well-formed at byte {} ({e})", reader.error_position()),
            )
        })?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                match e.local_name().as_ref() {
                    "p" if !empty => {
                        paragraph_depth += 1;
                        if paragraph_depth == 1 {
                            (style, numbered, outline) = (None, false, None);
                        } else {
                            out.buf.push(' ');
                        }
                    }
                    "pStyle" if paragraph_depth == 1 => style = xml_attr(e, "val"),
                    "numPr" if paragraph_depth == 1 => numbered = true,
                    "outlineLvl" if paragraph_depth == 1 => {
                        outline = xml_attr(e, "val")
                            .and_then(|v| v.parse::<u8>().ok())
                            .filter(|&l| l < 9)
                            .map(|l| (l + 1).min(6))
                    }
                    "t" if !empty => in_text = true,
                    "tab" => out.buf.push(' '),
                    "br" | "cr" => out.buf.push('\n'),
                    "Fallback" if !empty => fallback_depth += 1,
                    "tbl" if !empty => {
                        table_depth += 1;
                        if table_depth == 1 {
                            rows.clear();
                        }
                    }
                    "tc" if !empty && table_depth == 1 => cell.clear(),
                    _ => {}
                }
            }
            Event::Text(t) if in_text && fallback_depth == 0 => out.buf.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_text && fallback_depth == 0 => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => match r.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        _ => None,
                    },
                };
                out.buf.extend(c);
            }
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "Fallback" => fallback_depth = fallback_depth.saturating_sub(1),
                "p" => {
                    paragraph_depth = paragraph_depth.saturating_sub(1);
                    if paragraph_depth > 0 {
                        continue;
                    }
                    if table_depth > 0 {
                        cell.push(' ');
                        cell.push_str(&std::mem::take(&mut out.buf));
                        continue;
                    }
                    let role = style.as_deref().and_then(|s| styles.get(s).copied().or_else(|| style_role_by_id(s)));
                    let kind = match (role, outline) {
                        (Some(StyleRole::Heading(level)), _) => BlockKind::Heading(level),
                        (Some(StyleRole::Title), _) => {
                            title.get_or_insert_with(|| clean(&out.buf, BlockKind::Paragraph));
                            BlockKind::Heading(1)
                        }
                        (Some(StyleRole::List), _) => BlockKind::ListItem,
                        (None, Some(level)) => BlockKind::Heading(level),
                        (None, None) if numbered => BlockKind::ListItem,
                        (None, None) => BlockKind::Paragraph,
                    };
                    out.flush(kind);
                }
                "tc" if table_depth == 1 => row.push(clean(&std::mem::take(&mut cell), BlockKind::Paragraph)),
                "tr" if table_depth == 1 => rows.push(std::mem::take(&mut row).join(" | ")),
                "tbl" => {
                    table_depth = table_depth.saturating_sub(1);
                    if table_depth == 0 {
                        out.push(BlockKind::Table, clean(&std::mem::take(&mut rows).join("\n"), BlockKind::Table));
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((out.blocks, title.filter(|t| !t.is_empty())))
}

// ---------------------------------------------------------------------------------------------
// JSON and JSONL: one document per record

fn parse_json(text: &str, options: &ParseOptions) -> Result<Vec<ParsedDoc>> {
    // serde_json refuses nesting deeper than 128, so a hostile file cannot exhaust the stack.
    let value: Value = serde_json::from_str(text).map_err(|e| corrupt(Format::Json, format!("invalid JSON: {e}")))?;
    match value {
        Value::Object(record) => Ok(vec![json_record(Format::Json, record, options, "the top-level object")?]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(record) => json_record(Format::Json, record, options, &format!("record {i}")),
                _ => Err(corrupt(Format::Json, format!("record {i} is not an object"))),
            })
            .collect(),
        _ => Err(corrupt(Format::Json, "expected an object or an array of objects")),
    }
}

fn parse_jsonl(text: &str, options: &ParseOptions) -> Result<Vec<ParsedDoc>> {
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let label = format!("line {}", i + 1);
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(record)) => docs.push(json_record(Format::Jsonl, record, options, &label)?),
            Ok(_) => return Err(corrupt(Format::Jsonl, format!("{label} is not a JSON object"))),
            Err(e) => return Err(corrupt(Format::Jsonl, format!("{label} is not valid JSON: {e}"))),
        }
    }
    Ok(docs)
}

/// One record: the text field as plain-text paragraphs under the title (as a level-1 heading, so
/// that every chunk of the record carries it), the other scalar fields as metadata.
fn json_record(
    format: Format,
    mut record: Map<String, Value>,
    options: &ParseOptions,
    label: &str,
) -> Result<ParsedDoc> {
    let field = match &options.json_text_field {
        Some(field) => field.clone(),
        None => JSON_TEXT_FIELDS.into_iter().find(|f| record.contains_key(*f)).map(String::from).ok_or_else(|| {
            corrupt(format, format!("{label} has no text field (looked for `text`, `content`, `body`)"))
        })?,
    };
    let text = match record.remove(&field) {
        Some(Value::String(text)) => text,
        Some(_) => return Err(corrupt(format, format!("{label}: field `{field}` is not a string"))),
        None => return Err(corrupt(format, format!("{label} has no `{field}` field"))),
    };
    let title_field = JSON_TITLE_FIELDS.into_iter().find(|f| matches!(record.get(*f), Some(Value::String(_))));
    let title =
        title_field.and_then(|f| record.remove(f)).and_then(|v| v.as_str().map(|t| clean(t, BlockKind::Paragraph)));
    let title = title.filter(|t| !t.is_empty());

    let mut out = Blocks::default();
    if let Some(title) = &title {
        out.push(BlockKind::Heading(1), title.clone());
    }
    paragraphs(&text, &mut out);
    if out.blocks.is_empty() {
        return Err(corrupt(format, format!("{label} has an empty `{field}`")));
    }
    let metadata =
        record.into_iter().filter(|(_, v)| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))).collect();
    Ok(ParsedDoc { title, blocks: out.blocks, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_noise_and_keeps_lines_only_for_code_and_tables() {
        let raw = "  a\u{0}b\u{7} \u{AD}c\r\n\n  d\u{FEFF}\te  \n";
        assert_eq!(clean(raw, BlockKind::Paragraph), "ab c d e");
        assert_eq!(clean(raw, BlockKind::Table), "ab c\nd e");
        assert_eq!(clean("\n\n  fn x() {\n\t1   \n  }\n\n", BlockKind::Code), "  fn x() {\n\t1\n  }");
    }

    #[test]
    fn decode_text_strips_boms_and_refuses_binary() {
        assert_eq!(decode_text(Format::Text, b"\xEF\xBB\xBFa\r\nb\rc").unwrap(), "a\nb\nc");
        assert_eq!(decode_text(Format::Text, b"\xFE\xFF\x00h\x00i").unwrap(), "hi");
        let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert_eq!(decode_text(Format::Markdown, &binary).unwrap_err().code, ErrorCode::CorruptDocument);
    }

    #[test]
    fn docx_styles_are_recognised_by_built_in_name_whatever_their_id() {
        let styles = r#"<w:styles xmlns:w="x">
            <w:style w:type="paragraph" w:styleId="berschrift2"><w:name w:val="heading 2"/></w:style>
            <w:style w:type="paragraph" w:styleId="Titel"><w:name w:val="Title"/></w:style>
            <w:style w:type="paragraph" w:styleId="Aufz"><w:name w:val="List Bullet"/></w:style>
            <w:style w:type="paragraph" w:styleId="Custom"><w:name w:val="Mine"/><w:pPr><w:outlineLvl w:val="2"/></w:pPr></w:style>
            <w:style w:type="paragraph" w:styleId="Body"><w:name w:val="Body"/><w:pPr><w:outlineLvl w:val="9"/></w:pPr></w:style>
        </w:styles>"#;
        let roles = docx_styles(styles);
        assert_eq!(roles.get("berschrift2"), Some(&StyleRole::Heading(2)));
        assert_eq!(roles.get("Titel"), Some(&StyleRole::Title));
        assert_eq!(roles.get("Aufz"), Some(&StyleRole::List));
        assert_eq!(roles.get("Custom"), Some(&StyleRole::Heading(3)));
        assert_eq!(roles.get("Body"), None);
        assert_eq!(style_role_by_id("Heading4"), Some(StyleRole::Heading(4)));
    }

    #[test]
    fn docx_body_skips_fallbacks_and_flattens_nested_tables() {
        let body = r#"<w:document><w:body>
            <w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Top &amp; tail</w:t></w:r></w:p>
            <w:p><w:r><mc:AlternateContent><mc:Choice><w:t>once</w:t></mc:Choice><mc:Fallback><w:t>twice</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>
            <w:p><w:pPr><w:numPr><w:ilvl w:val="0"/></w:numPr></w:pPr><w:r><w:t xml:space="preserve">item </w:t><w:tab/><w:t>one&#33;</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>a</w:t></w:r></w:p></w:tc><w:tc>
                <w:tbl><w:tr><w:tc><w:p><w:r><w:t>inner</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            </w:tc></w:tr></w:tbl>
        </w:body></w:document>"#;
        let (blocks, _) = docx_body(body, &HashMap::new()).unwrap();
        let got: Vec<(BlockKind, &str)> = blocks.iter().map(|b| (b.kind, b.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (BlockKind::Heading(1), "Top & tail"),
                (BlockKind::Paragraph, "once"),
                (BlockKind::ListItem, "item one!"),
                (BlockKind::Table, "a | inner"),
            ]
        );
    }
}
