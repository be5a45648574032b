//! Reading a model's JSON answers: parse, else repair what models commonly get wrong, else ask
//! once more saying what was wrong.

use serde_json::Value;

use super::{ChatRequest, Llm};
use crate::error::{ErrorCode, Result};

/// Asks for JSON of shape `T`: parses, else repairs, else asks once more saying what was wrong.
/// The outer error is a failure to reach the model; the inner one, an unreadable answer.
pub async fn ask_json<T: serde::de::DeserializeOwned>(
    llm: &dyn Llm,
    first: ChatRequest,
    again: impl Fn(Option<String>) -> ChatRequest,
) -> Result<std::result::Result<(T, bool), String>> {
    let answer = llm.complete(&first).await?;
    let problem = match read_json::<T>(&answer.text) {
        Ok(parsed) => return Ok(Ok(parsed)),
        Err(problem) => problem,
    };
    let retry = again(Some(format!(
        "Your previous answer was not valid JSON of the requested shape ({problem}). Answer again with only the JSON object."
    )));
    let answer = match llm.complete(&retry).await {
        Ok(a) => a,
        Err(e) if e.code == ErrorCode::LlmUnavailable || e.code == ErrorCode::LlmTimeout => return Err(e),
        Err(e) => return Ok(Err(e.message)),
    };
    Ok(read_json::<T>(&answer.text).map(|(v, _)| (v, true)))
}

/// Parses a model's JSON answer; on failure tries a repair (code fences, text around the object,
/// trailing commas, single quotes). Returns whether a repair was needed.
pub fn read_json<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<(T, bool), String> {
    if let Ok(v) = serde_json::from_str::<T>(text.trim()) {
        return Ok((v, false));
    }
    let repaired = repair_json(text).ok_or_else(|| "no JSON object in the answer".to_string())?;
    serde_json::from_str::<T>(&repaired).map(|v| (v, true)).map_err(|e| e.to_string())
}

fn repair_json(text: &str) -> Option<String> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    if end <= start {
        return None;
    }
    let mut body = text[start..=end].to_string();
    // Trailing commas before a closing bracket.
    loop {
        let before = body.len();
        for close in ["}", "]"] {
            for gap in [",", ", ", ",\n", ",\n  ", ",\n    "] {
                body = body.replace(&format!("{gap}{close}"), close);
            }
        }
        if body.len() == before {
            break;
        }
    }
    if serde_json::from_str::<Value>(&body).is_err() && !body.contains('"') {
        body = body.replace('\'', "\"");
    }
    Some(body)
}
