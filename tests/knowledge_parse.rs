//! Document parsing and chunking: every format against the fixtures in
//! `tests/fixtures/documents/` (see its README), corrupt and hostile input, and chunk sizes and
//! coverage measured with the built-in model's own tokenizer.

use std::io::Write;
use std::sync::LazyLock;

use nexus::embed::builtin::MiniLm;
use nexus::error::{Error, ErrorCode};
use nexus::knowledge::chunk::{Chunk, ChunkOptions, chunk};
use nexus::knowledge::parse::{Block, BlockKind, Format, MAX_DOCX_XML_BYTES, ParseOptions, ParsedDoc, parse};
use rand::{Rng, SeedableRng};
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/documents/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse_one(format: Format, name: &str) -> ParsedDoc {
    let mut docs = parse(format, &fixture(name), &ParseOptions::default()).unwrap();
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn parse_err(format: Format, bytes: &[u8]) -> Error {
    match parse(format, bytes, &ParseOptions::default()) {
        Ok(docs) => panic!("{format}: expected an error, got {docs:?}"),
        Err(e) => e,
    }
}

fn block(kind: BlockKind, text: &str) -> Block {
    Block { kind, text: text.to_string() }
}

use BlockKind::{Code, Heading, ListItem, Paragraph, Quote, Table};

#[test]
fn format_detection_uses_extension_then_content_type_then_magic_bytes() {
    let pdf = fixture("notes.pdf");
    let docx = fixture("memo.docx");
    assert_eq!(Format::detect("Notes.PDF", None, b""), Some(Format::Pdf));
    assert_eq!(Format::detect("a.markdown", Some("text/plain"), b""), Some(Format::Markdown));
    assert_eq!(Format::detect("x.jsonl", None, b""), Some(Format::Jsonl));
    assert_eq!(Format::detect("x.ndjson", None, b""), Some(Format::Jsonl));
    assert_eq!(Format::detect("page.htm", None, b""), Some(Format::Html));
    // The extension wins over the content type and the bytes.
    assert_eq!(Format::detect("report.txt", Some("application/pdf"), &pdf), Some(Format::Text));
    assert_eq!(Format::detect("upload", Some("text/html; charset=utf-8"), b""), Some(Format::Html));
    assert_eq!(Format::detect("data.csv", Some("text/csv"), b""), Some(Format::Text));
    assert_eq!(Format::detect("blob", Some("application/octet-stream"), &pdf), Some(Format::Pdf));
    assert_eq!(Format::detect("blob", None, &docx), Some(Format::Docx));
    assert_eq!(Format::detect("archive.zip", None, &fixture("corrupt-not-word.docx")), None);
    assert_eq!(Format::detect("photo.png", Some("image/png"), b"\x89PNG\r\n"), None);
    assert_eq!(Format::detect("", None, b""), None);

    let err = Format::detect_or_error("photo.png", Some("image/png"), b"\x89PNG").unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedFormat);
    assert_eq!(
        (err.code.as_str(), err.code.http_status(), err.code.kind()),
        ("unsupported_format", 415, "invalid_request")
    );
    assert!(err.message.contains("photo.png") && err.message.contains(".docx"), "{}", err.message);

    for format in Format::ALL {
        assert_eq!(serde_json::to_value(format).unwrap(), json!(format.as_str()));
    }
}

#[test]
fn markdown_keeps_headings_lists_quotes_tables_and_code() {
    let doc = parse_one(Format::Markdown, "guide.md");
    assert_eq!(doc.title.as_deref(), Some("Greenhouse Operations Guide"));
    assert_eq!(doc.metadata["author"], "Nexus Test Suite");
    assert_eq!(
        doc.blocks,
        vec![
            block(Heading(1), "Greenhouse Operations Guide"),
            block(
                Paragraph,
                "This guide explains how the community greenhouse runs through the year. It is short on purpose."
            ),
            block(Heading(2), "Watering"),
            block(
                Paragraph,
                "Water the seedlings in the morning, before the panels heat up. Check the soil with a finger first."
            ),
            block(ListItem, "Tomatoes need deep, infrequent watering."),
            block(ListItem, "Herbs prefer to dry out between waterings."),
            block(ListItem, "Basil is the exception and likes moist soil."),
            block(ListItem, "Never water the succulents in winter."),
            block(Heading(3), "Rain barrels"),
            block(Paragraph, "The two rain barrels fill in about a week of steady rain."),
            block(Quote, "Keep the barrel lids closed so mosquitoes cannot breed."),
            block(Heading(2), "Ventilation"),
            block(Table, "Month | Vents open\nApril | Two\nJuly | All"),
            block(Code, "vent-control --open 2 --zone north"),
            block(Paragraph, "Close every vent before a storm."),
        ]
    );
}

#[test]
fn html_drops_scripts_styles_navigation_and_hidden_elements() {
    let doc = parse_one(Format::Html, "page.html");
    assert_eq!(doc.title.as_deref(), Some("Harbour Ferry Timetable"));
    assert_eq!(doc.metadata["description"], "When the little ferry runs");
    assert_eq!(doc.metadata["lang"], "en");
    assert_eq!(
        doc.blocks,
        vec![
            block(Heading(1), "Harbour Ferry Timetable"),
            block(Paragraph, "The ferry leaves the north quay every forty minutes. Bicycles travel free of charge."),
            block(Heading(2), "Winter schedule"),
            block(ListItem, "First crossing at seven in the morning"),
            block(ListItem, "Last crossing at six in the evening"),
            block(ListItem, "Except on public holidays"),
            block(Table, "Stop | Minutes\nNorth quay | 0\nLighthouse pier | 12"),
            block(Quote, "Tickets are sold on board only."),
            block(Code, "route   : north quay -> lighthouse pier\nduration: 12 min"),
        ]
    );
    let text = doc.text();
    for noise in ["tracker", "font-family", "About us", "more noise", "javascript", "secret"] {
        assert!(!text.contains(noise), "{noise:?} leaked into {text:?}");
    }
}

#[test]
fn html_without_title_takes_the_first_h1_and_survives_deep_nesting() {
    let doc =
        parse(Format::Html, b"<h2>Intro</h2><h1>Main <i>topic</i></h1><p>x &amp; y</p>", &ParseOptions::default())
            .unwrap()
            .remove(0);
    assert_eq!(doc.title.as_deref(), Some("Main topic"));
    assert_eq!(doc.blocks.last(), Some(&block(Paragraph, "x & y")));

    let deep = format!("{}deep words{}", "<div><span>".repeat(5_000), "</span></div>".repeat(5_000));
    let doc = parse(Format::Html, deep.as_bytes(), &ParseOptions::default()).unwrap().remove(0);
    assert_eq!(doc.text(), "deep words");
}

#[test]
fn pdf_text_by_page_with_document_info() {
    let doc = parse_one(Format::Pdf, "notes.pdf");
    assert_eq!(doc.title.as_deref(), Some("Tidal Garden Field Notes"));
    assert_eq!(doc.metadata["author"], "Nexus Test Suite");
    assert_eq!(doc.metadata["pages"], 2);
    assert!(doc.blocks.iter().all(|b| b.kind == Paragraph));
    let text = doc.text();
    for expected in [
        "Tidal Garden Field Notes",
        "The kelp beds north of the pier grew two hands taller this spring.",
        "Volunteers counted forty one periwinkles on the marked stones.",
        "Low water came at dawn on the survey day",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text:?}");
    }
    // The page break is a paragraph boundary.
    let last = doc.blocks.last().unwrap();
    assert!(last.text.starts_with("Second page: the anemone colony"), "{last:?}");
    assert!(last.text.ends_with("planned for the autumn equinox."), "{last:?}");
}

#[test]
fn docx_headings_lists_and_tables() {
    let doc = parse_one(Format::Docx, "memo.docx");
    assert_eq!(doc.title.as_deref(), Some("Workshop Safety Memo"));
    assert_eq!(doc.metadata["author"], "Nexus Test Suite");
    assert_eq!(
        doc.blocks,
        vec![
            block(Heading(1), "Workshop Safety Memo"),
            block(Paragraph, "Every visitor signs the log book before touching the lathe."),
            block(Heading(2), "Protective gear"),
            block(ListItem, "Safety glasses with side shields"),
            block(ListItem, "Hearing protection near the planer"),
            block(ListItem, "Closed shoes & no loose sleeves"),
            block(Heading(2), "Tool inventory"),
            block(Table, "Tool | Shelf\nChisel set | B2\nBlock plane | C4"),
            block(Paragraph, "Return tools to their shelf at the end of the day."),
        ]
    );
}

#[test]
fn plain_text_is_cleaned_and_split_on_blank_lines() {
    let doc = parse_one(Format::Text, "note.txt");
    assert_eq!(doc.title, None);
    assert_eq!(
        doc.blocks,
        vec![
            block(Paragraph, "First paragraph of a plain note. It continues on a second line."),
            block(Paragraph, "Second paragraph with a NUL and a tab."),
        ]
    );
    // UTF-16 with a byte-order mark, and invalid UTF-8 replaced rather than refused.
    let utf16: Vec<u8> = b"\xFF\xFE".iter().copied().chain("héllo".encode_utf16().flat_map(u16::to_le_bytes)).collect();
    assert_eq!(parse(Format::Text, &utf16, &ParseOptions::default()).unwrap()[0].text(), "héllo");
    assert_eq!(
        parse(Format::Text, b"caf\xE9 au lait", &ParseOptions::default()).unwrap()[0].text(),
        "caf\u{FFFD} au lait"
    );
}

#[test]
fn json_and_jsonl_give_one_document_per_record() {
    let docs = parse(Format::Json, &fixture("records.json"), &ParseOptions::default()).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].title.as_deref(), Some("Compost basics"));
    assert_eq!(
        docs[0].blocks,
        vec![
            block(Heading(1), "Compost basics"),
            block(Paragraph, "Mix green and brown material in equal parts."),
            block(Paragraph, "Turn the pile every two weeks."),
        ]
    );
    assert_eq!(serde_json::Value::Object(docs[0].metadata.clone()), json!({"id": "r1", "year": 2024, "public": true}));
    assert_eq!(docs[1].title.as_deref(), Some("Seed library"));
    assert_eq!(serde_json::Value::Object(docs[1].metadata.clone()), json!({"id": "r2"}));

    let docs = parse(Format::Jsonl, &fixture("records.jsonl"), &ParseOptions::default()).unwrap();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[1].title, None);
    assert_eq!(docs[1].blocks, vec![block(Paragraph, "Wild flowers along the fence attract more pollinators.")]);
    assert_eq!(docs[2].metadata["_id"], "doc-3");

    // A chosen text field; a single object is one record.
    let options = ParseOptions { json_text_field: Some("summary".into()) };
    let docs = parse(Format::Json, br#"{"summary": "Short.", "text": 3}"#, &options).unwrap();
    assert_eq!(docs[0].text(), "Short.");
    assert_eq!(docs[0].metadata["text"], 3);
}

#[test]
fn bad_json_records_name_the_record() {
    let err = parse_err(Format::Jsonl, &fixture("corrupt-missing-text.jsonl"));
    assert_eq!(err.code, ErrorCode::CorruptDocument);
    assert!(err.message.contains("line 3") && err.message.contains("text"), "{}", err.message);

    let err = parse_err(Format::Json, br#"[{"text": "ok"}, {"text": "ok"}, 7]"#);
    assert!(err.message.contains("record 2 is not an object"), "{}", err.message);
    let err = parse_err(Format::Json, br#"[{"text": "ok"}, {"text": ["not", "a", "string"]}]"#);
    assert!(err.message.contains("record 1") && err.message.contains("not a string"), "{}", err.message);
    let err = parse_err(Format::Jsonl, b"{\"text\": \"ok\"}\n{\"text\": \"\"}\n");
    assert!(err.message.contains("line 2 has an empty `text`"), "{}", err.message);
    let err = parse_err(Format::Jsonl, b"{\"text\": \"ok\"}\nnot json\n");
    assert!(err.message.contains("line 2 is not valid JSON"), "{}", err.message);
    let err = parse_err(Format::Json, &fixture("corrupt-syntax.json"));
    assert!(err.message.contains("invalid JSON"), "{}", err.message);
    let err = parse_err(Format::Json, b"[]");
    assert!(err.message.contains("no records"), "{}", err.message);

    // Deep nesting is an error, not a stack overflow.
    let deep = format!("{{\"text\": \"x\", \"a\": {}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let err = parse_err(Format::Json, deep.as_bytes());
    assert_eq!(err.code, ErrorCode::CorruptDocument);
    let deep = format!("{}\n", "{\"a\":".repeat(100_000));
    assert_eq!(parse_err(Format::Jsonl, deep.as_bytes()).code, ErrorCode::CorruptDocument);
}

#[test]
fn corrupt_and_empty_files_are_corrupt_document_errors() {
    let cases: Vec<(Format, Vec<u8>, &str)> = vec![
        (Format::Pdf, fixture("corrupt-truncated.pdf"), "pdf"),
        (Format::Pdf, fixture("no-text.pdf"), "no extractable text (a scanned pdf needs OCR"),
        (Format::Pdf, b"%PDF-1.7\n".to_vec(), "pdf"),
        (Format::Pdf, Vec::new(), "pdf"),
        (Format::Docx, fixture("corrupt-truncated.docx"), "not a readable zip archive"),
        (Format::Docx, fixture("corrupt-not-word.docx"), "no word/document.xml"),
        (Format::Docx, fixture("notes.pdf"), "not a readable zip archive"),
        (Format::Docx, docx_with_body("<w:document><w:body><w:p><w:r><w:t>x</w:r></w:p>"), "not well-formed"),
        (Format::Docx, docx_with_body("<w:document><w:body/></w:document>"), "no extractable text"),
        (Format::Text, Vec::new(), "no extractable text"),
        (Format::Text, b" \n\t\n   \n".to_vec(), "no extractable text"),
        (Format::Markdown, b"<!-- only a comment -->\n".to_vec(), "no extractable text"),
        (Format::Html, b"<html><script>x()</script></html>".to_vec(), "no extractable text"),
        (Format::Text, fixture("memo.docx"), "not UTF-8 text"),
    ];
    for (format, bytes, expected) in cases {
        let err = parse_err(format, &bytes);
        assert_eq!(err.code, ErrorCode::CorruptDocument, "{format}: {err:?}");
        assert!(err.message.contains(format.as_str()), "{format}: {}", err.message);
        assert!(err.message.contains(expected), "{format}: {expected:?} not in {:?}", err.message);
    }
    assert_eq!(
        (
            ErrorCode::CorruptDocument.as_str(),
            ErrorCode::CorruptDocument.http_status(),
            ErrorCode::CorruptDocument.kind()
        ),
        ("corrupt_document", 422, "invalid_request")
    );
    assert_eq!(ErrorCode::CorruptDocument.exit_code(), 1);
    assert_eq!(ErrorCode::UnsupportedFormat.exit_code(), 1);
}

fn docx_with_body(xml: &str) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("word/document.xml", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(xml.as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn docx_zip_bomb_is_refused_at_the_cap() {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("word/document.xml", zip::write::SimpleFileOptions::default()).unwrap();
    let block = vec![b' '; 1 << 20];
    for _ in 0..(MAX_DOCX_XML_BYTES >> 20) + 1 {
        zip.write_all(&block).unwrap();
    }
    let bomb = zip.finish().unwrap().into_inner();
    assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
    let err = parse_err(Format::Docx, &bomb);
    assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{err:?}");
    assert!(err.message.contains("200 MiB"), "{}", err.message);
}

/// Truncations, bit flips and garbage in every format: an error or a document, never a panic.
#[test]
fn no_input_makes_the_parser_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let samples = [
        (Format::Text, "note.txt"),
        (Format::Markdown, "guide.md"),
        (Format::Html, "page.html"),
        (Format::Pdf, "notes.pdf"),
        (Format::Docx, "memo.docx"),
        (Format::Json, "records.json"),
        (Format::Jsonl, "records.jsonl"),
    ];
    let mut runs = 0;
    for (format, name) in samples {
        let original = fixture(name);
        let mut inputs: Vec<Vec<u8>> = (0..=32).map(|i| original[..original.len() * i / 32].to_vec()).collect();
        for _ in 0..48 {
            let mut mutated = original.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..mutated.len());
                mutated[at] = rng.random();
            }
            inputs.push(mutated);
        }
        for len in [1, 7, 64, 4096] {
            inputs.push((0..len).map(|_| rng.random()).collect());
        }
        for other in ["notes.pdf", "memo.docx", "page.html", "records.json"] {
            inputs.push(fixture(other));
        }
        for input in inputs {
            for (i, doc) in parse(format, &input, &ParseOptions::default()).into_iter().flatten().enumerate() {
                assert!(!doc.blocks.is_empty(), "{format} doc {i}");
                assert!(doc.blocks.iter().all(|b| !b.text.is_empty() && !b.text.contains('\0')), "{format}: {doc:?}");
            }
            runs += 1;
        }
    }
    assert!(runs > 500);

    // Absurd nesting in the text formats: parsed, not a stack overflow.
    let nested_quotes = format!("{}deep", "> ".repeat(20_000));
    let nested_lists: String = (0..5_000).map(|i| format!("{}- item {i}\n", "  ".repeat(i))).collect();
    let brackets = format!("{}x{}", "[".repeat(50_000), "](u)".repeat(50_000));
    for text in [nested_quotes, nested_lists, brackets] {
        let started = std::time::Instant::now();
        let docs = parse(Format::Markdown, text.as_bytes(), &ParseOptions::default()).unwrap();
        assert!(!docs[0].blocks.is_empty());
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    }
}

// ---------------------------------------------------------------------------------------------
// Chunking, with the built-in model's tokenizer

static MODEL: LazyLock<MiniLm> = LazyLock::new(|| MiniLm::load().expect("load the built-in model"));

fn tokens(text: &str) -> usize {
    MODEL.token_count(text).unwrap()
}

fn chunks_of(doc: &ParsedDoc, options: ChunkOptions) -> Vec<Chunk> {
    let chunks = chunk(doc, &options, &tokens);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.ordinal, i);
        assert_eq!(c.token_count, tokens(&c.text), "{c:?}");
        assert!(c.token_count <= options.max_tokens, "chunk {i} has {} tokens: {:?}", c.token_count, c.text);
        assert!(!c.text.trim().is_empty());
    }
    chunks
}

/// The chunk's text without its "Heading > Sub: " context.
fn body(c: &Chunk) -> &str {
    let context = c.heading_path.join(" > ");
    if context.is_empty() {
        &c.text
    } else if c.text == context {
        ""
    } else if let Some(body) = c.text.strip_prefix(&format!("{context}: ")) {
        body
    } else {
        // A shortened context (no test heading contains ": ").
        c.text.split_once(": ").unwrap_or_else(|| panic!("no context prefix: {c:?}")).1
    }
}

/// Every word of every non-heading block appears in the chunk bodies, in order; overlap repeats
/// and words cut across chunks (matched as consecutive fragments) are allowed.
fn assert_covers(doc: &ParsedDoc, chunks: &[Chunk]) {
    let actual: Vec<&str> = chunks.iter().flat_map(|c| body(c).split_whitespace()).collect();
    let mut at = 0;
    for word in doc.blocks.iter().filter(|b| !matches!(b.kind, Heading(_))).flat_map(|b| b.text.split_whitespace()) {
        loop {
            assert!(at < actual.len(), "{word:?} is missing from the chunks");
            let mut joined = String::new();
            let mut end = at;
            while end < actual.len()
                && joined.len() < word.len()
                && word.starts_with(&format!("{joined}{}", actual[end]))
            {
                joined.push_str(actual[end]);
                end += 1;
            }
            if joined == word {
                at = end;
                break;
            }
            at += 1;
        }
    }
    for heading in doc.blocks.iter().filter(|b| matches!(b.kind, Heading(_))) {
        assert!(
            chunks.iter().any(|c| c.heading_path.contains(&heading.text)),
            "heading {:?} is in no chunk",
            heading.text
        );
    }
}

#[test]
fn fixtures_chunk_by_section_with_heading_context() {
    let doc = parse_one(Format::Markdown, "guide.md");
    let chunks = chunks_of(&doc, ChunkOptions::default());
    assert_covers(&doc, &chunks);
    let paths: Vec<Vec<&str>> = chunks.iter().map(|c| c.heading_path.iter().map(String::as_str).collect()).collect();
    assert_eq!(
        paths,
        vec![
            vec!["Greenhouse Operations Guide"],
            vec!["Greenhouse Operations Guide", "Watering"],
            vec!["Greenhouse Operations Guide", "Watering", "Rain barrels"],
            vec!["Greenhouse Operations Guide", "Ventilation"],
        ]
    );
    assert_eq!(
        chunks[2].text,
        "Greenhouse Operations Guide > Watering > Rain barrels: The two rain barrels fill in about a week of steady rain.\n\n\
         Keep the barrel lids closed so mosquitoes cannot breed."
    );

    for (format, name) in [(Format::Html, "page.html"), (Format::Pdf, "notes.pdf"), (Format::Docx, "memo.docx")] {
        let doc = parse_one(format, name);
        for options in [ChunkOptions::default(), ChunkOptions { max_tokens: 24, overlap_tokens: 8 }] {
            let chunks = chunks_of(&doc, options);
            assert_covers(&doc, &chunks);
        }
    }
    let docs = parse(Format::Jsonl, &fixture("records.jsonl"), &ParseOptions::default()).unwrap();
    let chunks = chunks_of(&docs[0], ChunkOptions::default());
    assert_eq!(chunks[0].text, "Bees: The hive on the roof produced twelve jars of honey.");
}

/// A document made to hit every path: many sentences in one paragraph, a run-on sentence, a
/// word longer than a chunk, a long code block, an empty section and an overlong heading.
fn stress_doc() -> ParsedDoc {
    let words = ["harbour", "lantern", "quartz", "meadow", "copper", "drizzle", "orbit", "velvet", "thimble", "zephyr"];
    let sentence = |i: usize| {
        let body: Vec<String> =
            (0..8 + i % 7).map(|j| format!("{}{}", words[(i * 3 + j) % words.len()], (i + j) % 13)).collect();
        format!("Sentence {i} says {}.", body.join(" "))
    };
    let long_paragraph = (0..80).map(sentence).collect::<Vec<_>>().join(" ");
    let run_on = (0..700).map(|i| words[i % words.len()]).collect::<Vec<_>>().join(" ");
    let blob = "xq7".repeat(1500);
    let code = (0..150)
        .map(|i| format!("    let value_{i} = compute({i}, \"{}\");", words[i % 10]))
        .collect::<Vec<_>>()
        .join("\n");
    let long_heading = (0..120).map(|i| words[i % words.len()]).collect::<Vec<_>>().join(" ");
    ParsedDoc {
        title: Some("Manual".into()),
        blocks: vec![
            block(Heading(1), "Manual"),
            block(Paragraph, "A short opening paragraph."),
            block(Heading(2), "Long section"),
            block(Paragraph, &long_paragraph),
            block(ListItem, "A list item right after it."),
            block(Heading(2), "Run-on"),
            block(Paragraph, &run_on),
            block(Heading(2), "Blob"),
            block(Paragraph, &blob),
            block(Heading(2), "Code"),
            block(Code, &code),
            block(Heading(2), "Empty section"),
            block(Heading(2), "Parent"),
            block(Heading(3), "Child"),
            block(Paragraph, "Under the child."),
            block(Heading(2), &long_heading),
            block(Paragraph, "Under the long heading."),
            block(Heading(2), "Trailing empty heading"),
        ],
        metadata: Default::default(),
    }
}

#[test]
fn every_chunk_fits_the_model_and_no_text_is_lost() {
    let doc = stress_doc();
    for options in [
        ChunkOptions::default(),
        ChunkOptions { max_tokens: 256, overlap_tokens: 0 },
        ChunkOptions { max_tokens: 64, overlap_tokens: 16 },
        ChunkOptions { max_tokens: 30, overlap_tokens: 10 },
    ] {
        let chunks = chunks_of(&doc, options);
        assert_covers(&doc, &chunks);
        assert!(chunks.len() > 10, "{options:?}: {} chunks", chunks.len());
    }

    let chunks = chunks_of(&doc, ChunkOptions::default());
    // Headings with nothing under them still appear, as a chunk of their own.
    assert!(chunks.iter().any(|c| c.text == "Manual > Empty section"));
    assert!(chunks.iter().any(|c| c.text == "Manual > Trailing empty heading"));
    assert!(
        !chunks.iter().any(|c| c.text == "Manual > Parent"),
        "a parent with a child section needs no chunk of its own"
    );
    assert!(chunks.iter().any(|c| c.text == "Manual > Parent > Child: Under the child."));
    // The overlong heading is cut in the prefix and kept whole in the body.
    let long_heading = &doc.blocks[15].text;
    let chunks_without_overlap = chunks_of(&doc, ChunkOptions { max_tokens: 200, overlap_tokens: 0 });
    let under: Vec<&Chunk> =
        chunks_without_overlap.iter().filter(|c| c.heading_path.last() == Some(long_heading)).collect();
    assert!(!under[0].text.starts_with(&format!("Manual > {long_heading}")), "{:?}", under[0]);
    let bodies = under.iter().map(|c| body(c)).collect::<Vec<_>>().join(" ");
    assert!(bodies.starts_with(long_heading.as_str()) && bodies.ends_with("Under the long heading."), "{bodies:?}");
    // Code is split at lines, keeping them whole.
    for c in chunks.iter().filter(|c| c.heading_path.last().map(String::as_str) == Some("Code")) {
        assert!(body(c).lines().all(|l| l.trim_start().starts_with("let value_") && l.ends_with(");")), "{c:?}");
    }
}

#[test]
fn a_long_section_continues_with_overlap() {
    let doc = stress_doc();
    // The test sentences are 25 to 45 tokens long: with 60 tokens of overlap, whole sentences are
    // repeated; with 30, often only the last sentence's trailing words.
    for (options, whole_sentences) in [
        (ChunkOptions { max_tokens: 200, overlap_tokens: 60 }, true),
        (ChunkOptions { max_tokens: 200, overlap_tokens: 30 }, false),
    ] {
        let chunks = chunks_of(&doc, options);
        let section: Vec<&Chunk> = chunks.iter().filter(|c| c.heading_path == ["Manual", "Long section"]).collect();
        assert!(section.len() >= 5, "{}", section.len());
        for pair in section.windows(2) {
            let (previous, next) = (body(pair[0]), body(pair[1]));
            // The next chunk starts with the end of the previous one.
            let shared = (1..=next.len().min(previous.len()))
                .filter(|&n| next.is_char_boundary(n) && previous.ends_with(&next[..n]))
                .max()
                .unwrap_or_else(|| panic!("no overlap between {previous:?} and {next:?}"));
            let overlap = &next[..shared];
            assert!(overlap.ends_with('.') && tokens(overlap) - 2 <= options.overlap_tokens, "{overlap:?}");
            if whole_sentences {
                assert!(overlap.starts_with("Sentence "), "{overlap:?}");
            }
        }
    }
    let chunks = chunks_of(&doc, ChunkOptions::default());
    // A new section starts fresh.
    let run_on = chunks.iter().find(|c| c.heading_path == ["Manual", "Run-on"]).unwrap();
    assert!(body(run_on).starts_with("harbour lantern"), "{run_on:?}");
}

#[test]
fn chunking_with_a_word_counter_is_deterministic() {
    let words = |s: &str| s.split_whitespace().count();
    let doc = stress_doc();
    let a = chunk(&doc, &ChunkOptions { max_tokens: 50, overlap_tokens: 10 }, &words);
    let b = chunk(&doc, &ChunkOptions { max_tokens: 50, overlap_tokens: 10 }, &words);
    assert_eq!(a, b);
    assert!(a.iter().all(|c| c.token_count <= 50 && c.token_count == words(&c.text)));
    assert_covers(&doc, &a);
    // An absurd budget is raised to a workable one rather than looping or overflowing.
    let tiny = chunk(&doc, &ChunkOptions { max_tokens: 0, overlap_tokens: 100 }, &words);
    assert!(tiny.iter().all(|c| c.token_count <= nexus::knowledge::chunk::MIN_BODY_TOKENS));
    assert_covers(&doc, &tiny);
    assert!(chunk(&ParsedDoc::default(), &ChunkOptions::default(), &words).is_empty());
}
