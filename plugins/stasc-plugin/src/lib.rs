//! SDK for stasc reward plugins: the `#[repr(C)]` ABI shared by the host and plugin dylibs.
//!
//! A plugin is a `cdylib` crate that calls [`export_reward!`] once. The macro exports the entry symbol
//! [`ENTRY_SYMBOL`], a function returning a pointer to a static [`RewardPluginDescriptor`]. The host reads the
//! descriptor's first field, `abi_version`, and refuses the plugin unless it equals its own [`ABI_VERSION`]; only then
//! does it read the other fields or call anything.
//!
//! The `score` entry takes the gold answers as a JSON array of strings and the answer text, both NUL-terminated
//! UTF-8, writes the score through `out` and returns a status ([`STATUS_OK`], [`STATUS_ERROR`] or [`STATUS_PANIC`]).
//! On a non-zero status the message is read with `last_error`, which returns a thread-local string valid until the
//! next call on that thread. A panic inside the plugin's function is caught by the macro's wrapper and becomes
//! [`STATUS_PANIC`]: it never unwinds into the host (plugins must keep the default `panic = "unwind"`).
//!
//! This crate has no dependencies, so a plugin builds in seconds and never links tch.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Version of the descriptor layout and calling convention; bumped on any incompatible change.
pub const ABI_VERSION: u32 = 1;

/// Name of the exported entry function (without the trailing NUL).
pub const ENTRY_SYMBOL: &str = "stasc_reward_plugin";

/// `score` succeeded and wrote a value through `out`.
pub const STATUS_OK: i32 = 0;
/// `score` failed with an error; the message is available from `last_error`.
pub const STATUS_ERROR: i32 = 1;
/// The plugin's scoring function panicked; the panic message is available from `last_error`.
pub const STATUS_PANIC: i32 = 2;

/// Signature of the exported entry function named [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const RewardPluginDescriptor;

/// Signature of a plugin's `score` function: gold answers (JSON array of strings), answer text, output slot.
pub type ScoreFn = unsafe extern "C" fn(gold_json: *const c_char, answer: *const c_char, out: *mut f64) -> i32;

/// Signature of a plugin's `last_error` function: the message of the last failed `score` call on this thread.
pub type LastErrorFn = unsafe extern "C" fn() -> *const c_char;

/// What a plugin exports. `abi_version` must stay the first field in every future version.
#[repr(C)]
pub struct RewardPluginDescriptor {
    /// The [`ABI_VERSION`] the plugin was built against.
    pub abi_version: u32,
    /// The reward's name: static, NUL-terminated UTF-8.
    pub name: *const c_char,
    /// Scores one answer; see the crate documentation for the contract.
    pub score: ScoreFn,
    /// Returns the message of the last failed `score` call on the calling thread (NUL-terminated UTF-8).
    pub last_error: LastErrorFn,
}

// SAFETY: the descriptor only holds a pointer to a static string and function pointers; nothing in it is mutated.
unsafe impl Sync for RewardPluginDescriptor {}

/// Implementation details used by [`export_reward!`]; not part of the stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    thread_local! {
        static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    }

    fn set_last_error(message: &str) {
        // Interior NULs would truncate the message on the host side; replace them so nothing is lost silently.
        let cleaned = message.replace('\0', "\u{FFFD}");
        let c = CString::new(cleaned).unwrap_or_default();
        LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
    }

    /// Returns the thread's last error message; valid until the next `score` call on this thread.
    pub unsafe extern "C" fn last_error() -> *const c_char {
        LAST_ERROR.with(|slot| slot.borrow().as_ptr())
    }

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_string()
        }
    }

    /// Decodes the C arguments, runs `score` under `catch_unwind` and encodes the result as a status.
    ///
    /// # Safety
    /// `gold_json` and `answer` must be valid NUL-terminated strings and `out` a valid pointer, as the ABI requires.
    pub unsafe fn call_score(
        gold_json: *const c_char,
        answer: *const c_char,
        out: *mut f64,
        score: fn(&[String], &str) -> Result<f64, String>,
    ) -> i32 {
        if gold_json.is_null() || answer.is_null() || out.is_null() {
            set_last_error("the host passed a null pointer to score");
            return STATUS_ERROR;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            let gold_text =
                CStr::from_ptr(gold_json).to_str().map_err(|_| "gold answers are not valid UTF-8".to_string())?;
            let gold = crate::parse_string_array(gold_text)?;
            let answer = CStr::from_ptr(answer).to_str().map_err(|_| "the answer is not valid UTF-8".to_string())?;
            score(&gold, answer)
        }));
        match result {
            Ok(Ok(value)) => {
                *out = value;
                STATUS_OK
            }
            Ok(Err(message)) => {
                set_last_error(&message);
                STATUS_ERROR
            }
            Err(payload) => {
                set_last_error(&panic_message(payload.as_ref()));
                STATUS_PANIC
            }
        }
    }
}

/// Exports a reward function as a stasc plugin.
///
/// `$name` is a string literal (the reward's name) and `$score` a `fn(&[String], &str) -> Result<f64, String>`
/// taking the gold answers and the answer text. Use it once per `cdylib` crate:
///
/// ```
/// fn score(gold: &[String], answer: &str) -> Result<f64, String> {
///     Ok(if gold.iter().any(|g| answer.contains(g.as_str())) { 1.0 } else { 0.0 })
/// }
/// stasc_plugin::export_reward!("contains", score);
/// ```
#[macro_export]
macro_rules! export_reward {
    ($name:literal, $score:path) => {
        /// Entry point read by the stasc host: returns this plugin's static descriptor.
        #[no_mangle]
        pub extern "C" fn stasc_reward_plugin() -> *const $crate::RewardPluginDescriptor {
            unsafe extern "C" fn __stasc_score(
                gold_json: *const ::std::ffi::c_char,
                answer: *const ::std::ffi::c_char,
                out: *mut f64,
            ) -> i32 {
                $crate::__private::call_score(gold_json, answer, out, $score)
            }
            static DESCRIPTOR: $crate::RewardPluginDescriptor = $crate::RewardPluginDescriptor {
                abi_version: $crate::ABI_VERSION,
                name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
                score: __stasc_score,
                last_error: $crate::__private::last_error,
            };
            &DESCRIPTOR
        }
    };
}

/// Parses a JSON array of strings (what the host sends as `gold_json`), with all JSON string escapes.
pub fn parse_string_array(text: &str) -> Result<Vec<String>, String> {
    let mut parser = JsonStrings { chars: text.char_indices().peekable(), text };
    parser.skip_ws();
    parser.expect('[')?;
    let mut items = Vec::new();
    parser.skip_ws();
    if parser.peek() == Some(']') {
        parser.next();
    } else {
        loop {
            parser.skip_ws();
            items.push(parser.string()?);
            parser.skip_ws();
            match parser.next() {
                Some(',') => continue,
                Some(']') => break,
                other => return Err(format!("gold answers: expected ',' or ']' in {text:?}, found {other:?}")),
            }
        }
    }
    parser.skip_ws();
    if let Some(c) = parser.next() {
        return Err(format!("gold answers: unexpected {c:?} after the array in {text:?}"));
    }
    Ok(items)
}

struct JsonStrings<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
}

impl JsonStrings<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn next(&mut self) -> Option<char> {
        self.chars.next().map(|(_, c)| c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.next();
        }
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        match self.next() {
            Some(c) if c == want => Ok(()),
            other => Err(format!("gold answers: expected {want:?} in {:?}, found {other:?}", self.text)),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self.next().and_then(|c| c.to_digit(16));
            value = value * 16 + digit.ok_or_else(|| format!("gold answers: bad \\u escape in {:?}", self.text))?;
        }
        Ok(value)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(format!("gold answers: unterminated string in {:?}", self.text)),
                Some('"') => return Ok(out),
                Some('\\') => match self.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => {
                        let first = self.hex4()?;
                        let code = if (0xD800..0xDC00).contains(&first) {
                            // A high surrogate must be followed by an escaped low surrogate.
                            if self.next() != Some('\\') || self.next() != Some('u') {
                                return Err(format!("gold answers: lone surrogate in {:?}", self.text));
                            }
                            let second = self.hex4()?;
                            if !(0xDC00..0xE000).contains(&second) {
                                return Err(format!("gold answers: bad surrogate pair in {:?}", self.text));
                            }
                            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                        } else {
                            first
                        };
                        out.push(
                            char::from_u32(code)
                                .ok_or_else(|| format!("gold answers: invalid code point in {:?}", self.text))?,
                        );
                    }
                    other => return Err(format!("gold answers: bad escape {other:?} in {:?}", self.text)),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_score(gold: &[String], answer: &str) -> Result<f64, String> {
        match answer {
            "panic" => panic!("asked to panic"),
            "error" => Err("asked to fail".to_string()),
            _ => Ok(gold.len() as f64),
        }
    }

    fn call(gold: &str, answer: &str) -> (i32, f64, String) {
        let gold = CString::new(gold).unwrap();
        let answer = CString::new(answer).unwrap();
        let mut out = f64::NAN;
        let status = unsafe { __private::call_score(gold.as_ptr(), answer.as_ptr(), &mut out, sample_score) };
        let message = unsafe { CStr::from_ptr(__private::last_error()) }.to_string_lossy().into_owned();
        (status, out, message)
    }

    #[test]
    fn parses_string_arrays_with_escapes() {
        assert_eq!(parse_string_array("[]").unwrap(), Vec::<String>::new());
        assert_eq!(parse_string_array(r#" [ "a" , "b\"c" ] "#).unwrap(), vec!["a", "b\"c"]);
        assert_eq!(parse_string_array(r#"["\u00e9\ud83d\ude00\n"]"#).unwrap(), vec!["é😀\n"]);
        assert!(parse_string_array(r#"["a""#).is_err());
        assert!(parse_string_array(r#"["a"] x"#).is_err());
        assert!(parse_string_array(r#"{"a": 1}"#).is_err());
        assert!(parse_string_array(r#"["\ud83d"]"#).is_err());
    }

    #[test]
    fn status_codes_and_messages() {
        assert_eq!(call(r#"["x","y"]"#, "ok").0, STATUS_OK);
        assert_eq!(call(r#"["x","y"]"#, "ok").1, 2.0);
        let (status, _, message) = call("[]", "error");
        assert_eq!((status, message.as_str()), (STATUS_ERROR, "asked to fail"));
        let (status, _, message) = call("[]", "panic");
        assert_eq!((status, message.as_str()), (STATUS_PANIC, "asked to panic"));
        let (status, _, message) = call("not json", "ok");
        assert_eq!(status, STATUS_ERROR);
        assert!(message.contains("expected '['"), "{message}");
    }

    export_reward!("sdk-self-test", sample_score);

    #[test]
    fn macro_builds_a_valid_descriptor() {
        let descriptor = unsafe { &*stasc_reward_plugin() };
        assert_eq!(descriptor.abi_version, ABI_VERSION);
        assert_eq!(unsafe { CStr::from_ptr(descriptor.name) }.to_str().unwrap(), "sdk-self-test");
        let gold = CString::new(r#"["a"]"#).unwrap();
        let answer = CString::new("panic").unwrap();
        let mut out = 0.0;
        assert_eq!(unsafe { (descriptor.score)(gold.as_ptr(), answer.as_ptr(), &mut out) }, STATUS_PANIC);
    }
}
