//! The context ranking of hybrid search: meeting windows ranked by the passage around them.
//!
//! A window of a few turns is short, and a question about a meeting often names the topic of a
//! whole stretch of it ("what did they decide about the buttons when discussing the
//! interface?"). So beside its keyword and semantic rankings, a hybrid search that meets meeting
//! windows among its candidates ranks them a third way: by the cosine similarity of the query to
//! the normalised sum of the vectors of the window and the [`CONTEXT_RADIUS`] windows on each
//! side of it (the centroid of the passage). Any other candidate (a document chunk, a memory)
//! is ranked in that list by its own vector, so a search over several sources weighs each hit
//! by three rankings. The list's weight in the fusion is `Fusion::context_weight`.
//!
//! The windows around a candidate are read by id (`meeting:chunk:<seq_start>`, starting every
//! `STRIDE` turns) from the record store, which keeps each record's vector.

use std::collections::HashMap;

use super::Window;
use crate::meetings::STRIDE;
use crate::meetings::model::chunk_record_id;
use crate::store::RecordKey;
use crate::store::records::Record;
use crate::store::vectors::cosine;

/// Windows on each side of a meeting window whose vectors make its context, chosen on QMSum's
/// first ten product meetings (`cargo bench --bench qmsum`): five windows of four turns every
/// two turns span about 24 turns.
pub const CONTEXT_RADIUS: u64 = 5;

/// The ids of the windows whose vectors make a window's context (itself included).
pub(super) fn context_ids(meeting_id: &str, seq_start: u64) -> impl Iterator<Item = String> + '_ {
    let first = seq_start.saturating_sub(CONTEXT_RADIUS * STRIDE);
    let last = seq_start + CONTEXT_RADIUS * STRIDE;
    (first..=last).step_by(STRIDE as usize).map(move |s| chunk_record_id(meeting_id, s))
}

/// The candidates ranked by context, best first, with their scores: a meeting window by the
/// query's similarity to the centroid of its context (the windows of `around`, found by id), any
/// other candidate by its own vector. Candidates without a vector of the query's length are left
/// out.
pub(super) fn rank(candidates: &[&Record], around: &HashMap<String, &Record>, query: &[f32]) -> Vec<(RecordKey, f32)> {
    let mut ranked: Vec<(RecordKey, f32)> = candidates
        .iter()
        .filter_map(|record| {
            let Some(window) = Window::of(record) else {
                let v = record.vector.as_deref().filter(|v| v.len() == query.len())?;
                return Some((record.key, cosine(v, query)));
            };
            let mut sum = vec![0f32; query.len()];
            let mut any = false;
            for id in context_ids(&window.meeting, window.first) {
                let vector = if id == record.id {
                    record.vector.as_deref()
                } else {
                    around.get(&id).and_then(|r| r.vector.as_deref())
                };
                if let Some(v) = vector.filter(|v| v.len() == query.len()) {
                    sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
                    any = true;
                }
            }
            any.then(|| (record.key, cosine(&sum, query)))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::meetings::model::CHUNK_KIND;

    fn window(key: RecordKey, meeting: &str, seq_start: u64, vector: [f32; 2]) -> Record {
        Record {
            key,
            tenant: crate::store::TenantId::default_tenant(),
            id: chunk_record_id(meeting, seq_start),
            kind: CHUNK_KIND.into(),
            title: None,
            body: None,
            tags: Vec::new(),
            metadata: json!({"meeting_id": meeting, "seq_start": seq_start, "seq_end": seq_start + 3}),
            vector: Some(vector.to_vec()),
            graph: None,
            version: 1,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            embed: true,
        }
    }

    #[test]
    fn a_window_inside_a_passage_on_the_query_outranks_a_lone_closer_match() {
        let query = [1.0, 0.0];
        // Meeting "a": window 20 matches a little, and so do the four windows around it.
        // Meeting "a", far away: window 100 matches better alone, its neighbours are off topic.
        let mut records = Vec::new();
        for (i, s) in [16u64, 18, 20, 22, 24].into_iter().enumerate() {
            records.push(window(i as u64 + 1, "a", s, [0.6, 0.8]));
        }
        records.push(window(10, "a", 100, [0.8, 0.6]));
        for (i, s) in [96u64, 98, 102, 104].into_iter().enumerate() {
            records.push(window(20 + i as u64, "a", s, [0.0, 1.0]));
        }
        let around: HashMap<String, &Record> = records.iter().map(|r| (r.id.clone(), r)).collect();
        let lone = records.iter().find(|r| r.key == 10).unwrap();
        let inside = records.iter().find(|r| r.key == 3).unwrap();
        let ranked = rank(&[lone, inside], &around, &query);
        assert_eq!(ranked.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![3, 10]);
        // Alone, the closer match leads: the context is what turns the order.
        let ranked = rank(&[lone, inside], &HashMap::new(), &query);
        assert_eq!(ranked.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![10, 3]);
    }

    #[test]
    fn context_reaches_five_windows_each_way_and_stops_at_the_meeting_start() {
        let ids: Vec<String> = context_ids("m", 4).collect();
        assert_eq!(ids.first().map(String::as_str), Some("m:chunk:0"));
        assert_eq!(ids.last().map(String::as_str), Some("m:chunk:14"));
        assert_eq!(ids.len(), 8);
        assert_eq!(context_ids("m", 40).count(), 2 * CONTEXT_RADIUS as usize + 1);
    }

    #[test]
    fn other_kinds_rank_by_their_own_vector_and_vectorless_ones_are_left_out() {
        let mut doc = window(7, "a", 0, [0.0, 1.0]);
        doc.kind = "chunk".into();
        let mut bare = window(8, "a", 0, [1.0, 0.0]);
        bare.kind = "memory".into();
        bare.vector = None;
        let w = window(9, "a", 2, [1.0, 0.0]);
        let ranked = rank(&[&doc, &bare, &w], &HashMap::new(), &[1.0, 0.0]);
        assert_eq!(ranked.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![9, 7]);
    }
}
