//! Samples to token ids and loss masks with the checkpoint's own tokenizer and chat
//! template. The whole conversation is rendered and tokenized once; each token is trained
//! when its text lies inside an assistant turn and outside every `<Execute>..</Execute>`
//! span (tags included). The prompt is never trained; the turn's closing EOS is.
use crate::error::Result;
use crate::records::{Message, SftSample, Trajectory};
use model::{ChatTemplate, Tokenizer};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    /// 1 = a training target, 0 = context only.
    pub mask: Vec<u8>,
    /// A token straddled a prompt/answer or `<Execute>` boundary (it is left untrained);
    /// counted by `data inspect` because it means the template and tokenizer disagree.
    pub boundary_drift: bool,
}

impl Tokenized {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn trained(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }
}

pub struct SampleTokenizer<'a> {
    pub tokenizer: &'a Tokenizer,
    pub template: &'a ChatTemplate,
}

fn as_json(msgs: &[Message]) -> Vec<Value> {
    msgs.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect()
}

impl SampleTokenizer<'_> {
    pub fn sft(&self, s: &SftSample) -> Result<Tokenized> {
        self.messages(&s.messages)
    }

    pub fn trajectory(&self, t: &Trajectory) -> Result<Tokenized> {
        self.messages(&t.messages())
    }

    /// The rendered text and the byte spans the model is trained on.
    pub fn render(&self, msgs: &[Message]) -> Result<(String, Vec<(usize, usize)>)> {
        // Templates without an `execute` role see observations spliced into the
        // assistant stream; do it first so every assistant turn is one message.
        let msgs: Vec<Value> = if self.template.knows_execute() {
            as_json(msgs)
        } else {
            model::chat::splice_execute(&as_json(msgs))
        };
        let role = |m: &Value| m["role"].as_str().unwrap_or("").to_string();
        let full = self.template.render(&msgs, None, false)?;
        let mut spans = vec![];
        // Each assistant turn: what rendering through it adds after the generation
        // prompt. Templates that rewrite earlier turns (Qwen3 drops old reasoning) break
        // that for those turns; then only the last turn is trained.
        let mut consistent = true;
        for k in (0..msgs.len()).filter(|&k| role(&msgs[k]) == "assistant") {
            // With a template that knows `execute`, a turn runs through its observations.
            let mut end = k + 1;
            while end < msgs.len() && matches!(role(&msgs[end]).as_str(), "execute" | "assistant") {
                end += 1;
            }
            if k > 0 && matches!(role(&msgs[k - 1]).as_str(), "execute" | "assistant") {
                continue; // inside a stream already covered
            }
            let prompt = self.template.render(&msgs[..k], None, true)?;
            let upto = if end == msgs.len() { full.clone() } else { self.template.render(&msgs[..end], None, false)? };
            if full.starts_with(&upto) && upto.starts_with(&prompt) {
                spans.push((prompt.len(), upto.len()));
            } else {
                consistent = false;
            }
        }
        if !consistent || spans.is_empty() {
            let last = msgs.iter().rposition(|m| role(m) == "assistant").unwrap_or(0);
            let mut first = last;
            while first > 0 && matches!(role(&msgs[first - 1]).as_str(), "execute" | "assistant") {
                first -= 1;
            }
            let prompt = self.template.render(&msgs[..first], None, true)?;
            spans = if full.starts_with(&prompt) { vec![(prompt.len(), full.len())] } else { vec![] };
        }
        Ok((full, spans))
    }

    pub fn messages(&self, msgs: &[Message]) -> Result<Tokenized> {
        let (text, spans) = self.render(msgs)?;
        let masked = execute_spans(&text);
        let (ids, offsets) = self.tokenizer.encode_with_offsets(&text)?;
        let mut drift = false;
        let mask = offsets
            .iter()
            .map(|&(a, b)| {
                let inside = |s: &(usize, usize)| a >= s.0 && b <= s.1;
                let overlaps = |s: &(usize, usize)| a < s.1 && b > s.0;
                let in_span = spans.iter().any(inside);
                let crosses = spans.iter().any(|s| overlaps(s) && !inside(s)) || masked.iter().any(|s| overlaps(s) && !inside(s));
                drift |= crosses;
                u8::from(in_span && !crosses && !masked.iter().any(overlaps))
            })
            .collect();
        Ok(Tokenized { ids, mask, boundary_drift: drift })
    }
}

/// Byte spans from each `<Execute>` through its `</Execute>` (an unclosed one runs to the end).
pub fn execute_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut from = 0;
    while let Some(i) = text[from..].find("<Execute>") {
        let start = from + i;
        let end = text[start..].find("</Execute>").map_or(text.len(), |j| start + j + "</Execute>".len());
        out.push((start, end));
        from = end;
    }
    out
}
