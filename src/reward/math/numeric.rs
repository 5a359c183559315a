//! Equality of two normalised answers, standing in for the reference's `sympy.simplify(a - b) == 0`.
//!
//! The expression `(a)-(b)` is parsed with Python's grammar (`^` as `**`, sympy's implicit multiplication between
//! numbers, single-letter symbols and parentheses) and evaluated the way sympy evaluates it: integers and their
//! quotients exactly, expressions in single-letter symbols as exact rational functions (so `x^2+1` equals `1+x^2`
//! and `c` equals `(c)`), decimals as 53-bit floats (sympy's `Float` for up to 15 significant digits) with every
//! operation involving a float rounded like an IEEE double, so `0.1+0.2` is not `0.3` here either.
//! Outside this domain (floats mixed with symbols, multi-letter names, `sqrt`, `pi`, functions, non-integer powers,
//! huge numbers, long decimals) the result is "unknown" and the answers count as different; sympy could prove some
//! of those equal.

use super::algebra::{add, div, float, mul, neg, pow, Poly, Value};

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Int(String),
    Decimal(String),
    Symbol(char),
    Op(char),
    Pow,
}

/// Python's tokenisation of the supported characters; `None` on anything else.
fn tokenize(expr: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let digits_from = |mut j: usize| {
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            j
        };
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let mut end = digits_from(i);
            let is_decimal = chars.get(end) == Some(&'.');
            if is_decimal {
                end = digits_from(end + 1);
            }
            // Exponents (1e5), imaginary (2j), underscores and prefixed literals (0x1f) are other Python literals.
            let next = chars.get(end).copied();
            if matches!(next, Some('e' | 'E' | 'j' | 'J' | '_'))
                || (c == '0' && matches!(next, Some('x' | 'X' | 'b' | 'B' | 'o' | 'O')))
            {
                return None;
            }
            let text: String = chars[i..end].iter().collect();
            tokens.push(if is_decimal { Token::Decimal(text) } else { Token::Int(text) });
            i = end;
        } else if c.is_ascii_alphabetic() {
            // One-letter names are plain symbols in sympy (after the grader lowercases everything); longer names
            // may be constants or functions (pi, oo, ln) or split into products, which is not reproduced.
            if chars.get(i + 1).is_some_and(|&n| n.is_ascii_alphanumeric() || n == '_') {
                return None;
            }
            tokens.push(Token::Symbol(c));
            i += 1;
        } else if c == '*' && chars.get(i + 1) == Some(&'*') {
            tokens.push(Token::Pow);
            i += 2;
        } else if matches!(c, '+' | '-' | '*' | '/' | '(' | ')') {
            if c == '/' && chars.get(i + 1) == Some(&'/') {
                return None;
            }
            tokens.push(Token::Op(c));
            i += 1;
        } else {
            return None;
        }
    }
    Some(insert_implicit_multiplication(tokens))
}

/// sympy's `implicit_multiplication`: a number, symbol or `)` directly followed by a number, symbol or `(`
/// multiplies.
fn insert_implicit_multiplication(tokens: Vec<Token>) -> Vec<Token> {
    let is_operand = |t: &Token| matches!(t, Token::Int(_) | Token::Decimal(_) | Token::Symbol(_));
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    for token in tokens {
        if let Some(previous) = out.last() {
            let left = is_operand(previous) || *previous == Token::Op(')');
            let right = is_operand(&token) || token == Token::Op('(');
            if left && right {
                out.push(Token::Op('*'));
            }
        }
        out.push(token);
    }
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat_op(&mut self, op: char) -> bool {
        if self.peek() == Some(&Token::Op(op)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Option<Value> {
        let mut value = self.term()?;
        loop {
            if self.eat_op('+') {
                value = add(&value, &self.term()?)?;
            } else if self.eat_op('-') {
                value = add(&value, &neg(&self.term()?)?)?;
            } else {
                return Some(value);
            }
        }
    }

    fn term(&mut self) -> Option<Value> {
        let mut value = self.factor()?;
        loop {
            if self.eat_op('*') {
                value = mul(&value, &self.factor()?)?;
            } else if self.eat_op('/') {
                value = div(&value, &self.factor()?)?;
            } else {
                return Some(value);
            }
        }
    }

    fn factor(&mut self) -> Option<Value> {
        if self.eat_op('-') {
            return neg(&self.factor()?);
        }
        if self.eat_op('+') {
            return self.factor();
        }
        let base = self.atom()?;
        if self.peek() == Some(&Token::Pow) {
            self.pos += 1;
            return pow(&base, &self.factor()?);
        }
        Some(base)
    }

    fn atom(&mut self) -> Option<Value> {
        let token = self.peek()?.clone();
        self.pos += 1;
        match token {
            Token::Int(digits) => {
                // Python rejects leading zeros in integer literals ("012"), but accepts "0" and "00".
                if digits.len() > 1 && digits.starts_with('0') && digits.chars().any(|c| c != '0') {
                    return None;
                }
                Some(Value::rational((digits.parse().ok()?, 1)))
            }
            Token::Decimal(text) => {
                // sympy keeps more than 53 bits for decimals with more than 15 significant digits.
                let significant = text.replace('.', "").trim_start_matches('0').len();
                if significant > 15 {
                    return None;
                }
                float(text.parse().ok()?)
            }
            Token::Symbol(name) => Some(Value::Exact { num: Poly::symbol(name), den: Poly::constant((1, 1)) }),
            Token::Op('(') => {
                let value = self.expr()?;
                self.eat_op(')').then_some(value)
            }
            _ => None,
        }
    }
}

/// True when `(a)-(b)` (with `^` meaning power) is zero in sympy's evaluation, within the supported domain.
pub fn difference_is_zero(a: &str, b: &str) -> bool {
    let expr = format!("({a})-({b})").replace('^', "**");
    let Some(tokens) = tokenize(&expr) else {
        return false;
    };
    let mut parser = Parser { tokens, pos: 0 };
    match parser.expr() {
        Some(value) if parser.pos == parser.tokens.len() => match value {
            Value::Exact { num, .. } => num.is_zero(),
            Value::Float(x) => x == 0.0,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::difference_is_zero as eq;

    #[test]
    fn exact_rationals() {
        assert!(eq("1/2", "2/4"));
        assert!(eq("3/6", "1/2"));
        assert!(eq("2(3)", "6"));
        assert!(eq("(1)(2)", "2"));
        assert!(eq("-2**2", "-4"));
        assert!(eq("2**-1", "1/2"));
        assert!(eq("2^3", "8"));
        assert!(eq("1+2/3", "5/3"));
        assert!(eq("-(1/3)", "-1/3"));
        assert!(!eq("1/3", "1/4"));
    }

    #[test]
    fn decimals_round_like_sympy_floats() {
        assert!(eq("0.25", "1/4"));
        assert!(eq("0.3", "3/10"));
        assert!(eq("1.5", "3/2"));
        assert!(eq("2.0", "2"));
        assert!(eq("2.5.5", "1.25"), "two adjacent numbers multiply");
        assert!(!eq("0.1+0.2", "0.3"));
        assert!(!eq("0.333333333333333", "1/3"));
        assert!(!eq("0.3333333333333333", "1/3"), "16 digits: beyond the emulated precision");
    }

    #[test]
    fn symbols_as_rational_functions() {
        assert!(eq("c", "(c)"));
        assert!(eq("x**2+1", "1+x**2"));
        assert!(eq("2x", "x*2"));
        assert!(eq("(x+1)(x-1)", "x**2-1"));
        assert!(eq("x/x", "1"));
        assert!(eq("1/(2x)", "(1/2)/x"));
        assert!(!eq("x", "y"));
        assert!(!eq("1/(x-x)", "1"));
    }

    #[test]
    fn outside_the_domain_is_not_equal() {
        assert!(!eq("0.5x", "x/2"), "floats mixed with symbols are not evaluated");
        assert!(!eq("xy", "yx"));
        assert!(!eq("x2", "2x"));
        assert!(!eq("1e3", "1000"));
        assert!(!eq("pi", "pi"));
        assert!(!eq("sqrt(4)", "2"));
        assert!(!eq("4**(1/2)", "2"));
        assert!(!eq("1/0", "1/0"));
        assert!(!eq("012", "12"));
        assert!(!eq("(1", "1"));
        assert!(!eq("1//2", "0"));
        assert!(!eq("5!", "120"));
    }
}
