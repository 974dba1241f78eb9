//! Chat templates: the checkpoint's own Jinja template (`chat_template.jinja` or
//! `tokenizer_config.json`), rendered with minijinja the way transformers renders it
//! (trim_blocks, lstrip_blocks, Python string methods, Python-style `tojson`), or the
//! built-in DeepAnalyze template when the checkpoint has none.
use crate::error::{Error, Result};
use minijinja::{Environment, ErrorKind, Value as JValue};
use serde_json::Value;
use std::path::Path;

pub const DEEPANALYZE_TEMPLATE: &str = include_str!("../templates/deepanalyze.jinja");

pub struct ChatTemplate {
    source: String,
    /// Compiled once: rendering is on the data pipeline's hot path.
    env: Environment<'static>,
    /// Where it came from, for error messages.
    pub origin: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// The checkpoint's template: `chat_template.jinja` first, then `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list whose `default` entry is used); the built-in
    /// DeepAnalyze template when neither has one.
    pub fn from_dir(dir: &Path, tokenizer_config: &serde_json::Map<String, Value>) -> Result<Self> {
        let token = |k: &str| crate::tokenizer::special_token(tokenizer_config, k);
        let (bos_token, eos_token) = (token("bos_token"), token("eos_token"));
        let jinja = dir.join("chat_template.jinja");
        let (source, origin) = if jinja.exists() {
            (std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?, jinja.display().to_string())
        } else {
            let origin = dir.join("tokenizer_config.json").display().to_string() + " (chat_template)";
            match tokenizer_config.get("chat_template") {
                Some(Value::String(s)) => (s.clone(), origin),
                Some(Value::Array(list)) => {
                    let default = list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
                    match default.and_then(|t| t.get("template")).and_then(Value::as_str) {
                        Some(s) => (s.to_string(), origin),
                        None => return Err(Error::Template { source_name: origin, reason: "no `default` template in the list".into() }),
                    }
                }
                _ => (DEEPANALYZE_TEMPLATE.to_string(), "built-in DeepAnalyze template".to_string()),
            }
        };
        Self::compile(source, origin, bos_token, eos_token)
    }

    pub fn deepanalyze() -> Self {
        Self::compile(DEEPANALYZE_TEMPLATE.into(), "built-in DeepAnalyze template".into(), None, None)
            .expect("the built-in template compiles")
    }

    fn compile(source: String, origin: String, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let env = Self::env(&source, &origin)?; // syntax errors surface here, not at first use
        Ok(Self { source, env, origin, bos_token, eos_token })
    }

    /// Whether the template handles the `execute` role itself.
    pub fn knows_execute(&self) -> bool {
        self.source.contains("execute")
    }

    fn env(source: &str, origin: &str) -> Result<Environment<'static>> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<JValue, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Template { source_name: origin.to_string(), reason: e.to_string() })?;
        Ok(env)
    }

    /// Renders `messages` (OpenAI-style objects; `role` may be `execute`) with optional
    /// `tools`. Templates that do not know `execute` get it spliced into the assistant
    /// stream first (see [`splice_execute`]).
    pub fn render(&self, messages: &[Value], tools: Option<&Value>, add_generation_prompt: bool) -> Result<String> {
        let messages = if self.knows_execute() { messages.to_vec() } else { splice_execute(messages) };
        let env = &self.env;
        let ctx = minijinja::context! {
            messages => JValue::from_serialize(&messages),
            tools => tools.map(JValue::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| Error::Template { source_name: self.origin.clone(), reason: format!("{e:#}") })
    }
}

/// Folds `execute` turns into the assistant stream: each run of assistant/execute messages
/// becomes one assistant message whose content has every observation inlined as
/// `\n<Execute>\n{output}\n</Execute>\n`, the text the DeepAnalyze model was trained on.
pub fn splice_execute(messages: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").and_then(Value::as_str).unwrap_or("");
        let piece = match role {
            "execute" => format!("\n<Execute>\n{content}\n</Execute>\n"),
            "assistant" => content.to_string(),
            _ => {
                out.push(m.clone());
                continue;
            }
        };
        match out.last_mut() {
            Some(last) if last.get("role").and_then(Value::as_str) == Some("assistant") => {
                let merged = format!("{}{piece}", last["content"].as_str().unwrap_or(""));
                last["content"] = Value::String(merged);
            }
            _ => {
                let mut m = if role == "assistant" { m.clone() } else { serde_json::json!({}) };
                m["role"] = "assistant".into();
                m["content"] = Value::String(piece);
                out.push(m);
            }
        }
    }
    out
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: JValue, kwargs: minijinja::value::Kwargs) -> std::result::Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let (item, key) = match &separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        _ => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    python_dumps(&json, indent, &item, &key, sort_keys.unwrap_or(false), 0, &mut out);
    Ok(JValue::from_safe_string(out))
}

fn python_dumps(v: &Value, indent: Option<usize>, item: &str, key_sep: &str, sort: bool, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&python_number(n)),
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap()),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item);
                }
                newline(out, depth + 1);
                python_dumps(x, indent, item, key_sep, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(o) => {
            let mut entries: Vec<(&String, &Value)> = o.iter().collect();
            if sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(key_sep);
                python_dumps(x, indent, item, key_sep, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
    }
}

/// Python's float repr: shortest round-trip digits, exponent form outside [1e-4, 1e16)
/// written as `1e-05` / `1e+16`.
fn python_number(n: &serde_json::Number) -> String {
    let Some(f) = n.as_f64().filter(|_| n.is_f64()) else { return n.to_string() };
    if !f.is_finite() {
        return if f.is_nan() { "NaN".into() } else if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}"); // shortest digits, e.g. 1e-5, 1.5e16
        let (mantissa, exp) = s.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    }
}
