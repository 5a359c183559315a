//! English number words to digits, with the exact (and quirky) rules of PyPI `word2number` 1.1, which the
//! reference's math answer normalisation applies to every extracted answer.
//!
//! Quirks kept on purpose: words that are not number words are ignored ("one third" is 1), a lone "point" is 0, a
//! numeric string is returned without leading zeros, and anything `word2number` rejects leaves the text unchanged.

use super::super::pystr;

fn word_value(word: &str) -> Option<u64> {
    Some(match word {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        "hundred" => 100,
        "thousand" => 1000,
        "million" => 1_000_000,
        "billion" => 1_000_000_000,
        _ => return None,
    })
}

/// `number_formation`: how word2number combines up to four words; `None` where it raises (no words).
fn number_formation(words: &[&str]) -> Option<u64> {
    let n: Vec<u64> = words.iter().map(|w| word_value(w)).collect::<Option<_>>()?;
    Some(match n.len() {
        0 => return None,
        4 => n[0] * n[1] + n[2] + n[3],
        3 => n[0] * n[1] + n[2],
        2 if n.contains(&100) => n[0] * n[1],
        2 => n[0] + n[1],
        _ => n[0],
    })
}

/// The number word2number reads: an integer, or a float when a decimal part was given.
enum Number {
    Int(u64),
    Float(f64),
}

/// `word_to_num` for text that is not a plain digit string; `None` where word2number raises.
fn word_to_num(sentence: &str) -> Option<Number> {
    let sentence = pystr::lower(&sentence.replace('-', " "));
    let clean: Vec<&str> =
        pystr::split_ws(&sentence).into_iter().filter(|w| *w == "point" || word_value(w).is_some()).collect();
    if clean.is_empty() {
        return None;
    }
    let count = |w: &str| clean.iter().filter(|c| **c == w).count();
    if count("thousand") > 1 || count("million") > 1 || count("billion") > 1 || count("point") > 1 {
        return None;
    }
    let mut decimals: &[&str] = &[];
    let mut numbers: &[&str] = &clean;
    if let Some(p) = clean.iter().position(|w| *w == "point") {
        decimals = &clean[p + 1..];
        numbers = &clean[..p];
    }
    let index = |w: &str| numbers.iter().position(|c| *c == w);
    let (billion, million, thousand) = (index("billion"), index("million"), index("thousand"));
    let before = |a: Option<usize>, b: Option<usize>| matches!((a, b), (Some(x), Some(y)) if x < y);
    if before(thousand, million) || before(thousand, billion) || before(million, billion) {
        return None;
    }
    let mut total: u64 = 0;
    if numbers.len() == 1 {
        total += word_value(numbers[0])?;
    } else if numbers.len() > 1 {
        if let Some(b) = billion {
            total += number_formation(&numbers[..b])? * 1_000_000_000;
        }
        if let Some(m) = million {
            let start = billion.map_or(0, |b| b + 1);
            total += number_formation(numbers.get(start..m)?)? * 1_000_000;
        }
        if let Some(t) = thousand {
            let start = million.or(billion).map_or(0, |i| i + 1);
            total += number_formation(numbers.get(start..t)?)? * 1000;
        }
        let last = numbers.len() - 1;
        let hundreds = match (thousand, million, billion) {
            (Some(t), _, _) if t != last => number_formation(&numbers[t + 1..])?,
            (_, Some(m), _) if m != last => number_formation(&numbers[m + 1..])?,
            (_, _, Some(b)) if b != last => number_formation(&numbers[b + 1..])?,
            (None, None, None) => number_formation(numbers)?,
            _ => 0,
        };
        total += hundreds;
    }
    if decimals.is_empty() {
        return Some(Number::Int(total));
    }
    // get_decimal_sum: the digit words after "point", or 0 if any of them is not a single digit word.
    let mut digits = String::from("0.");
    for word in decimals {
        match word_value(word) {
            Some(d) if d < 10 => digits.push(char::from_digit(d as u32, 10).expect("digit")),
            _ => return Some(Number::Int(total)),
        }
    }
    Some(Number::Float(total as f64 + digits.parse::<f64>().expect("decimal digits")))
}

/// `convert_word_number`: the number the text spells, as Python's `str()` writes it, or the text unchanged.
pub fn convert_word_number(text: &str) -> String {
    let lowered = pystr::lower(&text.replace('-', " "));
    if pystr::all_decimal(&lowered) {
        // `int(text)` of a digit string: leading zeros dropped, other scripts' digits made ASCII.
        return pystr::int_str(&lowered).unwrap_or_else(|| text.to_string());
    }
    match word_to_num(text) {
        Some(Number::Int(n)) => n.to_string(),
        Some(Number::Float(x)) => pystr::float_repr(x),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::convert_word_number as c;

    #[test]
    fn spelled_numbers() {
        assert_eq!(c("five"), "5");
        assert_eq!(c("Forty-Two"), "42");
        assert_eq!(c("one hundred"), "100");
        assert_eq!(c("three hundred twenty five"), "325");
        assert_eq!(c("two thousand and nineteen"), "2019");
        assert_eq!(c("one million two hundred thousand"), "1201200", "word2number double counts here");
        assert_eq!(c("seven billion"), "7000000000");
        assert_eq!(c("two point five"), "2.5");
        assert_eq!(c("five point zero"), "5.0");
        assert_eq!(c("two point five ten"), "2");
    }

    #[test]
    fn quirks_are_kept() {
        assert_eq!(c("one third"), "1");
        assert_eq!(c("point"), "0");
        assert_eq!(c("x + one"), "1");
        assert_eq!(c("007"), "7");
        assert_eq!(c("\u{0661}\u{0662}"), "12");
        assert_eq!(c("twenty twenty twenty twenty twenty"), "20");
    }

    #[test]
    fn rejected_text_is_unchanged() {
        assert_eq!(c("\\frac{1}{2}"), "\\frac{1}{2}");
        assert_eq!(c("-5"), "-5");
        assert_eq!(c("3.5"), "3.5");
        assert_eq!(c("thousand five"), "thousand five");
        assert_eq!(c("one thousand thousand"), "one thousand thousand");
        assert_eq!(c("thousand million"), "thousand million");
        assert_eq!(c("²"), "²");
        assert_eq!(c(""), "");
    }
}
