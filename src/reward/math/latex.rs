//! LaTeX to plain text for math answers, reproducing what `pylatexenc` 2.x `LatexNodes2Text().latex_to_text` gives
//! on the constructs that final answers use (the reference grader renders LaTeX with it before comparing).
//!
//! Supported: `\frac`/`\nicefrac` (rendered `a/b` without parentheses, as pylatexenc does), `\sqrt` (optional index
//! dropped: `√(x)`), text wrappers (`\text`, `\textbf`, `\mathrm`, `\overline`, `\boxed`, ...), math alphabets
//! (`\mathbf`, `\mathbb`, `\mathcal`, ...: letters mapped to Unicode math letters),
//! braces, escaped characters, spacing macros, and a table of symbols (Greek letters, relations, operators) together
//! with the macros pylatexenc drops (`\left`, `\right`, `\ne`, `\cot`, `\mbox{...}`, ...). A letter macro swallows
//! the whitespace after it; unbalanced braces are read as pylatexenc reads them. Anything else (environments, accents, `$`, `%`, `&`, unknown macros) makes [`latex_to_text`] return
//! `None`: the caller then treats the answer as not comparable beyond plain string equality, rather than guess.

/// Renders `input` as pylatexenc would, or `None` when it uses a construct outside the supported subset.
pub fn latex_to_text(input: &str) -> Option<String> {
    let chars: Vec<char> = input.chars().collect();
    let mut parser = Parser { chars: &chars, pos: 0 };
    let text = parser.nodes(false)?;
    (parser.pos == chars.len()).then_some(text)
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

fn is_latex_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Zero-argument letter macros and their text.
fn symbol(name: &str) -> Option<&'static str> {
    Some(match name {
        "pi" => "π",
        "cdot" => "·",
        "times" => "×",
        "div" => "÷",
        "infty" => "∞",
        "le" | "leq" => "≤",
        "ge" | "geq" => "≥",
        "neq" => "≠",
        "approx" => "≈",
        "sim" => "∼",
        "equiv" => "≡",
        "in" => "∈",
        "notin" => "∉",
        "cup" => "∪",
        "cap" => "∩",
        "setminus" => "∖",
        "subset" => "⊂",
        "subseteq" => "⊆",
        "supset" => "⊃",
        "supseteq" => "⊇",
        "emptyset" | "varnothing" => "∅",
        "pm" => "±",
        "mp" => "∓",
        "circ" => "∘",
        "ast" => "∗",
        "star" => "⋆",
        "perp" => "⊥",
        "parallel" => "∥",
        "mid" | "vert" => "|",
        "angle" => "∠",
        "prime" => "'",
        "textdegree" => "°",
        "ldots" | "dots" => "…",
        "cdots" => "⋯",
        "to" | "rightarrow" => "→",
        "leftarrow" => "←",
        "Rightarrow" => "⇒",
        "lfloor" => "⌊",
        "rfloor" => "⌋",
        "lceil" => "⌈",
        "rceil" => "⌉",
        "langle" => "⟨",
        "rangle" => "⟩",
        "quad" => "  ",
        "qquad" => "    ",
        "sin" => "sin",
        "cos" => "cos",
        "tan" => "tan",
        "log" => "log",
        "ln" => "ln",
        "exp" => "exp",
        "max" => "max",
        "min" => "min",
        "lim" => "lim",
        "alpha" => "α",
        "beta" => "β",
        "gamma" => "γ",
        "delta" => "δ",
        "epsilon" => "ϵ",
        "varepsilon" => "ε",
        "zeta" => "ζ",
        "eta" => "η",
        "theta" => "θ",
        "vartheta" => "ϑ",
        "iota" => "ι",
        "kappa" => "κ",
        "lambda" => "λ",
        "mu" => "μ",
        "nu" => "ν",
        "xi" => "ξ",
        "omicron" => "ο",
        "varpi" => "ϖ",
        "rho" => "ρ",
        "varrho" => "ϱ",
        "sigma" => "σ",
        "varsigma" => "ς",
        "tau" => "τ",
        "upsilon" => "υ",
        "phi" => "ϕ",
        "varphi" => "φ",
        "chi" => "χ",
        "psi" => "ψ",
        "omega" => "ω",
        "Gamma" => "Γ",
        "Delta" => "Δ",
        "Theta" => "Θ",
        "Lambda" => "Λ",
        "Xi" => "Ξ",
        "Pi" => "Π",
        "Sigma" => "Σ",
        "Upsilon" => "Υ",
        "Phi" => "Φ",
        "Psi" => "Ψ",
        "Omega" => "Ω",
        // Macros pylatexenc knows no text for: they vanish (their following braces, if any, stay as a group).
        "left" | "right" | "ne" | "limits" | "displaystyle" | "bmod" | "mod" | "gcd" | "deg" | "arg" | "cot"
        | "sec" | "csc" | "triangle" | "implies" | "iff" | "cdotp" | "colon" | "degree" => "",
        _ => return None,
    })
}

/// Macros whose single argument is rendered as plain text.
fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "text"
            | "textrm"
            | "textit"
            | "textbf"
            | "textsc"
            | "textsl"
            | "emph"
            | "mathrm"
            | "overline"
            | "underline"
            | "boxed"
    )
}

/// Math alphabets (`\mathbf`, `\mathbb`, ...): pylatexenc maps ASCII letters into the Unicode block of the style
/// (offsets of capital A and small a) and leaves every other character as it is.
#[derive(Clone, Copy, PartialEq)]
enum MathStyle {
    Bold,
    Italic,
    Script,
    Fraktur,
    DoubleStruck,
    Sans,
    Monospace,
}

fn math_style(name: &str) -> Option<MathStyle> {
    Some(match name {
        "mathbf" => MathStyle::Bold,
        "mathit" => MathStyle::Italic,
        "mathcal" | "mathscr" => MathStyle::Script,
        "mathfrak" => MathStyle::Fraktur,
        "mathbb" => MathStyle::DoubleStruck,
        "mathsf" => MathStyle::Sans,
        "mathtt" => MathStyle::Monospace,
        _ => return None,
    })
}

fn styled_char(c: char, style: MathStyle) -> char {
    // Letters Unicode had already encoded elsewhere (the "holes" in the math alphanumeric block).
    let exception = match (style, c) {
        (MathStyle::Italic, 'h') => Some('\u{210E}'),
        (MathStyle::Script, 'B') => Some('\u{212C}'),
        (MathStyle::Script, 'E') => Some('\u{2130}'),
        (MathStyle::Script, 'F') => Some('\u{2131}'),
        (MathStyle::Script, 'H') => Some('\u{210B}'),
        (MathStyle::Script, 'I') => Some('\u{2110}'),
        (MathStyle::Script, 'L') => Some('\u{2112}'),
        (MathStyle::Script, 'M') => Some('\u{2133}'),
        (MathStyle::Script, 'R') => Some('\u{211B}'),
        (MathStyle::Script, 'e') => Some('\u{212F}'),
        (MathStyle::Script, 'g') => Some('\u{210A}'),
        (MathStyle::Script, 'o') => Some('\u{2134}'),
        (MathStyle::Fraktur, 'C') => Some('\u{212D}'),
        (MathStyle::Fraktur, 'H') => Some('\u{210C}'),
        (MathStyle::Fraktur, 'I') => Some('\u{2111}'),
        (MathStyle::Fraktur, 'R') => Some('\u{211C}'),
        (MathStyle::Fraktur, 'Z') => Some('\u{2128}'),
        (MathStyle::DoubleStruck, 'C') => Some('\u{2102}'),
        (MathStyle::DoubleStruck, 'H') => Some('\u{210D}'),
        (MathStyle::DoubleStruck, 'N') => Some('\u{2115}'),
        (MathStyle::DoubleStruck, 'P') => Some('\u{2119}'),
        (MathStyle::DoubleStruck, 'Q') => Some('\u{211A}'),
        (MathStyle::DoubleStruck, 'R') => Some('\u{211D}'),
        (MathStyle::DoubleStruck, 'Z') => Some('\u{2124}'),
        _ => None,
    };
    if let Some(e) = exception {
        return e;
    }
    let (upper, lower) = match style {
        MathStyle::Bold => (0x1D400, 0x1D41A),
        MathStyle::Italic => (0x1D434, 0x1D44E),
        MathStyle::Script => (0x1D49C, 0x1D4B6),
        MathStyle::Fraktur => (0x1D504, 0x1D51E),
        MathStyle::DoubleStruck => (0x1D538, 0x1D552),
        MathStyle::Sans => (0x1D5A0, 0x1D5BA),
        MathStyle::Monospace => (0x1D670, 0x1D68A),
    };
    let code = match c {
        'A'..='Z' => upper + (c as u32 - 'A' as u32),
        'a'..='z' => lower + (c as u32 - 'a' as u32),
        _ => return c,
    };
    char::from_u32(code).unwrap_or(c)
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_latex_space) {
            self.pos += 1;
        }
    }

    /// A sequence of nodes up to the end of input, or up to the closing brace of a group when `in_group`.
    fn nodes(&mut self, in_group: bool) -> Option<String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            match c {
                '}' if in_group => return Some(out),
                // pylatexenc drops a stray closing brace.
                '}' => self.pos += 1,
                '$' | '%' | '&' => return None,
                '{' => out.push_str(&self.group()?),
                '~' => {
                    self.pos += 1;
                    out.push('\u{a0}');
                }
                '\\' => out.push_str(&self.macro_node()?),
                _ => {
                    self.pos += 1;
                    out.push(c);
                }
            }
        }
        // An unclosed group ends with the input, as pylatexenc reads it.
        Some(out)
    }

    /// `{...}`: its content, braces dropped.
    fn group(&mut self) -> Option<String> {
        self.pos += 1;
        let inner = self.nodes(true)?;
        if self.peek() == Some('}') {
            self.pos += 1;
        }
        Some(inner)
    }

    /// A macro argument: a group, or else one non-space character.
    fn argument(&mut self) -> Option<String> {
        self.skip_space();
        match self.peek()? {
            '{' => self.group(),
            '\\' | '}' | '$' | '%' | '&' | '[' | ']' => None,
            c => {
                self.pos += 1;
                Some(c.to_string())
            }
        }
    }

    fn macro_node(&mut self) -> Option<String> {
        self.pos += 1;
        // A backslash ending the input renders as nothing.
        let Some(first) = self.peek() else {
            return Some(String::new());
        };
        if !first.is_ascii_alphabetic() {
            self.pos += 1;
            return Some(
                match first {
                    ',' | ';' | ':' | ' ' => " ",
                    '!' | '|' => "",
                    '\\' => "\n",
                    '{' => "{",
                    '}' => "}",
                    '%' => "%",
                    '$' => "$",
                    '#' => "#",
                    '_' => "_",
                    '&' => "&",
                    _ => return None,
                }
                .to_string(),
            );
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        self.skip_space();
        match name.as_str() {
            "frac" | "nicefrac" => {
                let numerator = self.argument()?;
                let denominator = self.argument()?;
                Some(format!("{numerator}/{denominator}"))
            }
            "sqrt" => {
                if self.peek() == Some('[') {
                    // The optional index is parsed and dropped, as pylatexenc does.
                    let close = self.chars[self.pos..].iter().position(|&c| c == ']')?;
                    self.pos += close + 1;
                }
                Some(format!("√({})", self.argument()?))
            }
            // pylatexenc reads \mbox's argument and renders nothing for it.
            "mbox" => self.argument().map(|_| String::new()),
            name => match math_style(name) {
                Some(style) => Some(self.argument()?.chars().map(|c| styled_char(c, style)).collect()),
                None if is_wrapper(name) => self.argument(),
                None => symbol(name).map(str::to_string),
            },
        }
    }
}
#[cfg(test)]
mod tests {
    use super::latex_to_text as t;

    #[test]
    fn fractions_and_roots() {
        assert_eq!(t(" \\frac{1}{2}").as_deref(), Some(" 1/2"));
        assert_eq!(t("\\frac12").as_deref(), Some("1/2"));
        assert_eq!(t("\\frac 1 2").as_deref(), Some("1/2"));
        assert_eq!(t("\\frac{a+b}{c}").as_deref(), Some("a+b/c"));
        assert_eq!(t("\\frac{\\frac{1}{2}}{3}").as_deref(), Some("1/2/3"));
        assert_eq!(t("\\sqrt{2}").as_deref(), Some("√(2)"));
        assert_eq!(t("\\sqrt2").as_deref(), Some("√(2)"));
        assert_eq!(t("\\sqrt[3]{8}").as_deref(), Some("√(8)"));
        assert_eq!(t("\\frac{\\sqrt{3}}{2}").as_deref(), Some("√(3)/2"));
    }

    #[test]
    fn symbols_spacing_and_wrappers() {
        assert_eq!(t("\\pi  x").as_deref(), Some("πx"));
        assert_eq!(t("2\\,\\pi").as_deref(), Some("2 π"));
        assert_eq!(t("\\, 3").as_deref(), Some("  3"));
        assert_eq!(t("\\left( 1 \\right)").as_deref(), Some("( 1 )"));
        assert_eq!(t("\\left\\{1\\right\\}").as_deref(), Some("{1}"));
        assert_eq!(t("\\text {a} b").as_deref(), Some("a b"));
        assert_eq!(t("\\ne3").as_deref(), Some("3"));
        assert_eq!(t("x\\in\\mathbb{Z}").as_deref(), Some("x∈ℤ"));
        assert_eq!(t("{1}{2}").as_deref(), Some("12"));
        assert_eq!(t("a\\\\b").as_deref(), Some("a\nb"));
        assert_eq!(t("5\\%").as_deref(), Some("5%"));
        assert_eq!(t("\\mathbf{11}").as_deref(), Some("11"));
        assert_eq!(t("\\mathbf{v}").as_deref(), Some("\u{1D42F}"));
        assert_eq!(t("\\mathbb{R}").as_deref(), Some("ℝ"));
        assert_eq!(t("\\mathcal{B}").as_deref(), Some("\u{212C}"));
    }

    #[test]
    fn unbalanced_braces_are_read_tolerantly() {
        assert_eq!(t("{1").as_deref(), Some("1"));
        assert_eq!(t("a}b").as_deref(), Some("ab"));
        assert_eq!(t("\\frac{1}{").as_deref(), Some("1/"));
        assert_eq!(t("\\sqrt{").as_deref(), Some("√()"));
        assert_eq!(t("\\mbox{x} y").as_deref(), Some(" y"));
        assert_eq!(t("a\\").as_deref(), Some("a"));
    }

    #[test]
    fn unsupported_constructs_are_refused() {
        assert_eq!(t("\\begin{pmatrix}1\\end{pmatrix}"), None);
        assert_eq!(t("\\hat{a}"), None);
        assert_eq!(t("\\frac{1}"), None);
        assert_eq!(t("\\frac"), None);
        assert_eq!(t("$1$"), None);
        assert_eq!(t("\\unknownmacro"), None);
    }
}
