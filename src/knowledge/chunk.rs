//! Chunking: a [`ParsedDoc`] → [`Chunk`]s sized for the embedding model.
//!
//! Contract:
//! - Chunks follow the structure. A heading starts a new chunk; consecutive blocks are packed into
//!   one chunk while they fit; a block too long for a chunk of its own is split at sentence
//!   boundaries (Unicode's, UAX #29; line breaks for code and tables), a sentence too long at
//!   spaces, a word too long between characters.
//! - Every chunk's text starts with its heading path as context, `"Guide > Watering: …"`, so that
//!   it embeds and matches with its section; `heading_path` holds the same headings. The prefix is
//!   part of the budget: `token_count`, what `count_tokens` says of the whole text, is never above
//!   `max_tokens`. A path longer than half the budget is shortened (outer headings dropped, then
//!   the innermost cut at a word); a heading that had to be cut is kept as body text as well.
//! - Nothing is lost: the words of every block appear, in order, across the chunks; every heading
//!   appears in some chunk (a heading with nothing under it gets a chunk of its own).
//! - Overlap: when a section goes on into a new chunk, that chunk starts with the trailing
//!   sentences of the previous one, up to `overlap_tokens` (trailing words when the last sentence
//!   alone is longer). A new section starts without overlap.
//! - `count_tokens` is the embedder's count for a whole input, special tokens included (for the
//!   built-in model, `MiniLm::count_tokens`: `[CLS]` and `[SEP]` make 2). What it returns for ""
//!   is taken as that fixed cost, so the overlap is measured without it.
//! - `max_tokens` is raised to at least [`MIN_BODY_TOKENS`] plus that fixed cost; `overlap_tokens`
//!   is lowered to at most half of what remains.

use unicode_segmentation::UnicodeSegmentation;

use super::parse::{BlockKind, ParsedDoc};

/// The smallest budget a chunk's own text gets, whatever `max_tokens` says.
pub const MIN_BODY_TOKENS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Most tokens in a chunk's text, heading prefix and special tokens included.
    pub max_tokens: usize,
    /// Most tokens a chunk repeats from the end of the previous one in the same section.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    /// 200 tokens: under the built-in model's 256, so a chunk is embedded whole.
    fn default() -> Self {
        ChunkOptions { max_tokens: 200, overlap_tokens: 30 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub ordinal: usize,
    /// The heading context prefix, then the body.
    pub text: String,
    /// The headings this chunk is under, outermost first.
    pub heading_path: Vec<String>,
    /// `count_tokens(&text)`.
    pub token_count: usize,
}

/// Split `doc` into chunks. See the module docs for the contract.
pub fn chunk(doc: &ParsedDoc, options: &ChunkOptions, count_tokens: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let specials = count_tokens("");
    let max = options.max_tokens.max(specials + MIN_BODY_TOKENS);
    let mut chunker = Chunker {
        count: count_tokens,
        max,
        overlap: options.overlap_tokens.min((max - specials) / 2),
        specials,
        path: Vec::new(),
        context: String::new(),
        context_tokens: 0,
        heading_pending: false,
        body: Vec::new(),
        body_tokens: 0,
        chunks: Vec::new(),
    };
    for block in &doc.blocks {
        match block.kind {
            BlockKind::Heading(level) => chunker.heading(level, &block.text),
            kind => chunker.block(kind, &block.text),
        }
    }
    chunker.finish()
}

struct Chunker<'a> {
    count: &'a dyn Fn(&str) -> usize,
    max: usize,
    overlap: usize,
    /// What `count` gives for "": the special tokens every input carries.
    specials: usize,
    /// (level, text) of the headings we are under, outermost first.
    path: Vec<(u8, String)>,
    /// The path as it prefixes chunk text: "A > B", shortened to fit half the budget.
    context: String,
    /// Tokens of the "A > B: " prefix, special tokens not included.
    context_tokens: usize,
    /// The innermost heading has not appeared in any chunk yet.
    heading_pending: bool,
    /// The chunk being filled, without its context prefix.
    body: Vec<Piece>,
    body_tokens: usize,
    chunks: Vec<Chunk>,
}

/// A piece of a chunk's body: a block, or a sentence, line or run of words of one. Each fits a
/// chunk on its own.
struct Piece {
    /// Put before the text when it follows another piece: a blank line between blocks, a space
    /// or a line break inside one.
    separator: &'static str,
    text: String,
    /// Its tokens, special tokens not included.
    tokens: usize,
    /// Repeated from the end of the previous chunk.
    overlap: bool,
}

impl Chunker<'_> {
    fn with_context(&self, body: &str) -> String {
        if self.context.is_empty() { body.to_string() } else { format!("{}: {body}", self.context) }
    }

    fn count_in_context(&self, body: &str) -> usize {
        (self.count)(&self.with_context(body))
    }

    fn fits(&self, body: &str) -> bool {
        self.count_in_context(body) <= self.max
    }

    /// A piece of text that fits; `in_context` is its `count_in_context`.
    fn piece(&self, text: String, in_context: usize) -> Piece {
        let tokens = in_context.saturating_sub(self.specials + self.context_tokens);
        Piece { separator: " ", text, tokens, overlap: false }
    }

    /// The most of `n` items (words, characters) whose `piece` fits a chunk. A piece cut out of a
    /// longer text leaves room for the overlap when it can, so the next chunk can start with it.
    fn longest_piece(&self, n: usize, piece: impl Fn(usize) -> String) -> usize {
        // Every item costs at least a token, so no more than `max` can fit.
        let n = n.min(self.max);
        match largest_fitting(n, |k| self.count_in_context(&piece(k)) + self.overlap <= self.max) {
            0 => largest_fitting(n, |k| self.fits(&piece(k))),
            k => k,
        }
    }

    fn heading(&mut self, level: u8, text: &str) {
        self.emit();
        let mut path: Vec<(u8, String)> = self.path.iter().filter(|(l, _)| *l < level).cloned().collect();
        path.push((level, text.to_string()));
        let context = self.context_for(&path);
        // The current heading, still in no chunk, shows in later chunks' prefixes only if the new
        // heading is below it and the new prefix is the whole path; else it gets a chunk now.
        let below = self.path.last().is_some_and(|(l, _)| level > *l);
        if self.heading_pending && !(below && context == join_path(&path)) && !self.context.is_empty() {
            self.push(self.context.clone());
        }
        self.path = path;
        self.context_tokens =
            if context.is_empty() { 0 } else { (self.count)(&format!("{context}: ")).saturating_sub(self.specials) };
        self.context = context;
        self.heading_pending = true;
        if !self.context.ends_with(text) {
            // Cut to fit the prefix: the whole heading goes into the body so no word is lost.
            self.block(BlockKind::Paragraph, text);
        }
    }

    /// The longest suffix of the path that fits half the budget; else the innermost heading's
    /// leading words.
    fn context_for(&self, path: &[(u8, String)]) -> String {
        let limit = self.max / 2;
        let fits = |s: &str| (self.count)(&format!("{s}: ")) <= limit;
        for start in 0..path.len() {
            let joined = join_path(&path[start..]);
            if fits(&joined) {
                return joined;
            }
        }
        let words: Vec<&str> = path.last().map(|(_, t)| t.split_whitespace().collect()).unwrap_or_default();
        let k = largest_fitting(words.len().min(limit), |k| fits(&words[..k].join(" ")));
        words[..k].join(" ")
    }

    fn block(&mut self, kind: BlockKind, text: &str) {
        let by_lines = matches!(kind, BlockKind::Code | BlockKind::Table);
        for (i, mut piece) in self.pieces(text, by_lines).into_iter().enumerate() {
            piece.separator = match (i, by_lines) {
                (0, _) => "\n\n",
                (_, true) => "\n",
                (_, false) => " ",
            };
            self.add(piece);
        }
    }

    /// `text` cut into pieces that each fit a chunk on their own: whole, else its sentences (or
    /// lines), cutting further those that are still too long.
    fn pieces(&self, text: &str, by_lines: bool) -> Vec<Piece> {
        // Every word is at least a token: a block of more words than the budget is not counted whole.
        if text.split_whitespace().nth(self.max).is_none() {
            let whole = self.count_in_context(text);
            if whole <= self.max {
                return vec![self.piece(text.to_string(), whole)];
            }
        }
        let units: Vec<&str> = if by_lines { text.lines().collect() } else { text.split_sentence_bounds().collect() };
        let mut pieces = Vec::new();
        for unit in units.into_iter().map(|u| if by_lines { u.trim_end() } else { u.trim() }).filter(|u| !u.is_empty())
        {
            let tokens = self.count_in_context(unit);
            if tokens <= self.max {
                pieces.push(self.piece(unit.to_string(), tokens));
            } else {
                pieces.extend(self.split_words(unit));
            }
        }
        pieces
    }

    fn split_words(&self, text: &str) -> Vec<Piece> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut pieces = Vec::new();
        let mut rest = &words[..];
        while let Some(first) = rest.first() {
            let k = self.longest_piece(rest.len(), |k| rest[..k].join(" "));
            if k == 0 {
                pieces.extend(self.split_chars(first));
                rest = &rest[1..];
            } else {
                let text = rest[..k].join(" ");
                pieces.push(self.piece(text.clone(), self.count_in_context(&text)));
                rest = &rest[k..];
            }
        }
        pieces
    }

    fn split_chars(&self, word: &str) -> Vec<Piece> {
        let chars: Vec<char> = word.chars().collect();
        let mut pieces = Vec::new();
        let mut rest = &chars[..];
        while !rest.is_empty() {
            // At least one character, so this always ends (the prefix leaves half the budget).
            let k = self.longest_piece(rest.len(), |k| rest[..k].iter().collect()).max(1);
            let text: String = rest[..k].iter().collect();
            pieces.push(self.piece(text.clone(), self.count_in_context(&text)));
            rest = &rest[k..];
        }
        pieces
    }

    /// Append a piece; when the chunk is full, emit it and start the next with the overlap.
    fn add(&mut self, piece: Piece) {
        // Token counts add up across whitespace for WordPiece (the built-in model), so this sum
        // is the joined text's count without tokenizing it again; `emit` checks the real count.
        let estimate = |chunker: &Self, more: usize| {
            chunker.specials + chunker.context_tokens + chunker.body_tokens + more <= chunker.max
        };
        if !self.body.is_empty() && !estimate(self, piece.tokens) {
            let seed = self.overlap_seed();
            self.emit();
            if let Some(seed) = seed.filter(|seed| estimate(self, seed.tokens + piece.tokens)) {
                self.push_piece(seed);
            }
        }
        self.push_piece(piece);
    }

    fn push_piece(&mut self, piece: Piece) {
        self.body_tokens += piece.tokens;
        self.body.push(piece);
    }

    fn body_text(&self) -> String {
        let mut text = String::new();
        for (i, piece) in self.body.iter().enumerate() {
            if i > 0 {
                text.push_str(piece.separator);
            }
            text.push_str(&piece.text);
        }
        text
    }

    /// The end of the current body to repeat at the start of the next chunk: its trailing
    /// sentences up to the overlap, else the last sentence's trailing words.
    fn overlap_seed(&self) -> Option<Piece> {
        if self.overlap == 0 {
            return None;
        }
        let body = self.body_text();
        let fits = |s: &str| (self.count)(s) <= self.overlap + self.specials;
        let sentences: Vec<&str> = body.split_sentence_bounds().collect();
        let mut start = sentences.len();
        while start > 0 && fits(sentences[start - 1..].concat().trim()) {
            start -= 1;
        }
        let seed = if start < sentences.len() {
            sentences[start..].concat().trim().to_string()
        } else {
            let words: Vec<&str> = sentences.last()?.split_whitespace().collect();
            let k = largest_fitting(words.len().min(self.overlap), |k| fits(&words[words.len() - k..].join(" ")));
            if k == 0 {
                return None;
            }
            words[words.len() - k..].join(" ")
        };
        let tokens = (self.count)(&seed).saturating_sub(self.specials);
        Some(Piece { separator: " ", text: seed, tokens, overlap: true })
    }

    /// Close the current chunk. Its real count is checked: should the tokenizer not add up over
    /// whitespace, trailing pieces move on to the next chunk until it fits.
    fn emit(&mut self) {
        let mut carried = Vec::new();
        while !self.body.is_empty() {
            let text = self.with_context(&self.body_text());
            let token_count = (self.count)(&text);
            if token_count <= self.max || self.body.len() == 1 {
                // A chunk of nothing but overlap says nothing new.
                if !self.body.iter().all(|p| p.overlap) {
                    self.push_counted(text, token_count);
                }
                break;
            }
            carried.extend(self.body.pop());
        }
        self.body.clear();
        self.body_tokens = 0;
        for piece in carried.into_iter().rev() {
            self.add(piece);
        }
    }

    fn push(&mut self, text: String) {
        let token_count = (self.count)(&text);
        self.push_counted(text, token_count);
    }

    fn push_counted(&mut self, text: String, token_count: usize) {
        let heading_path = self.path.iter().map(|(_, t)| t.clone()).collect();
        self.chunks.push(Chunk { ordinal: self.chunks.len(), text, heading_path, token_count });
        self.heading_pending = false;
    }

    fn finish(mut self) -> Vec<Chunk> {
        self.emit();
        if self.heading_pending && !self.context.is_empty() {
            self.push(self.context.clone());
        }
        self.chunks
    }
}

fn join_path(path: &[(u8, String)]) -> String {
    path.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > ")
}

/// The largest `k` in `0..=n` with `fits(k)`, for a `fits` that holds up to some point and not
/// after (a prefix of words only grows in tokens); `fits(0)` is assumed.
fn largest_fitting(n: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::parse::Block;

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn doc(blocks: &[(BlockKind, &str)]) -> ParsedDoc {
        let blocks = blocks.iter().map(|(kind, text)| Block { kind: *kind, text: text.to_string() }).collect();
        ParsedDoc { blocks, ..Default::default() }
    }

    #[test]
    fn largest_fitting_finds_the_boundary() {
        for n in 0..20 {
            for limit in 0..=n {
                assert_eq!(largest_fitting(n, |k| k <= limit), limit);
            }
        }
    }

    #[test]
    fn blocks_are_packed_until_full_and_headings_start_chunks() {
        let d = doc(&[
            (BlockKind::Heading(1), "Top"),
            (BlockKind::Paragraph, "one two three"),
            (BlockKind::Paragraph, "four five six"),
            (BlockKind::Paragraph, "seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen x y z w"),
            (BlockKind::Heading(2), "Sub"),
            (BlockKind::ListItem, "last words"),
        ]);
        let options = ChunkOptions { max_tokens: 18, overlap_tokens: 0 };
        let texts: Vec<String> = chunk(&d, &options, &words).into_iter().map(|c| c.text).collect();
        assert_eq!(
            texts,
            vec![
                "Top: one two three\n\nfour five six",
                "Top: seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen x y z w",
                "Top > Sub: last words",
            ]
        );
    }

    #[test]
    fn long_blocks_split_at_sentences_then_words_with_overlap() {
        let d = doc(&[(BlockKind::Paragraph, "A b c d e f. G h i j k l. M n o p q r s t u v w x y z aa bb cc dd.")]);
        let options = ChunkOptions { max_tokens: 16, overlap_tokens: 6 };
        let texts: Vec<String> = chunk(&d, &options, &words).into_iter().map(|c| c.text).collect();
        // Sentence 3 alone is too long, so it is cut at words, into pieces that leave room for the
        // overlap; each new chunk repeats the end of the previous one (a whole sentence when one
        // fits in 6 words, else trailing words).
        assert_eq!(
            texts,
            vec!["A b c d e f. G h i j k l.", "G h i j k l. M n o p q r s t u v", "q r s t u v w x y z aa bb cc dd."]
        );
    }
}
