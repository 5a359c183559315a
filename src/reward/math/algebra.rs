//! Exact arithmetic the way sympy evaluates numbers: reduced rationals in i128, polynomials and rational functions
//! in one-letter symbols with rational coefficients, and 53-bit floats (IEEE doubles) for decimals. Every operation
//! returns `None` where it would overflow or leave that domain, so callers can say "unknown" instead of guessing.

use std::collections::BTreeMap;

type Rational = (i128, i128);

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

/// A reduced rational with a positive denominator; `None` on a zero denominator or overflow.
fn rational(num: i128, den: i128) -> Option<Rational> {
    if den == 0 {
        return None;
    }
    let g = gcd(num, den).max(1);
    let (num, den) = (num / g, den / g);
    if den < 0 {
        Some((num.checked_neg()?, den.checked_neg()?))
    } else {
        Some((num, den))
    }
}

fn rat_add(a: Rational, b: Rational) -> Option<Rational> {
    rational(a.0.checked_mul(b.1)?.checked_add(b.0.checked_mul(a.1)?)?, a.1.checked_mul(b.1)?)
}

fn rat_mul(a: Rational, b: Rational) -> Option<Rational> {
    rational(a.0.checked_mul(b.0)?, a.1.checked_mul(b.1)?)
}

/// A monomial: each symbol with its exponent, sorted by symbol.
type Monomial = Vec<(char, u32)>;

/// A polynomial with exact rational coefficients; no zero coefficients are stored.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Poly(BTreeMap<Monomial, Rational>);

impl Poly {
    /// The constant polynomial `c`.
    pub(super) fn constant(c: Rational) -> Self {
        let mut terms = BTreeMap::new();
        if c.0 != 0 {
            terms.insert(Vec::new(), c);
        }
        Poly(terms)
    }

    /// The polynomial made of one symbol.
    pub(super) fn symbol(name: char) -> Self {
        Poly(BTreeMap::from([(vec![(name, 1)], (1, 1))]))
    }

    /// True for the zero polynomial.
    pub(super) fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    /// The value when the polynomial has no symbols.
    fn as_constant(&self) -> Option<Rational> {
        match self.0.len() {
            0 => Some((0, 1)),
            1 => self.0.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    fn add(&self, other: &Poly) -> Option<Poly> {
        let mut terms = self.0.clone();
        for (monomial, &c) in &other.0 {
            let sum = match terms.get(monomial) {
                Some(&existing) => rat_add(existing, c)?,
                None => c,
            };
            if sum.0 == 0 {
                terms.remove(monomial);
            } else {
                terms.insert(monomial.clone(), sum);
            }
        }
        Some(Poly(terms))
    }

    fn neg(&self) -> Option<Poly> {
        let terms =
            self.0.iter().map(|(m, &(n, d))| Some((m.clone(), (n.checked_neg()?, d)))).collect::<Option<_>>()?;
        Some(Poly(terms))
    }

    fn mul(&self, other: &Poly) -> Option<Poly> {
        let mut product = Poly(BTreeMap::new());
        for (ma, &ca) in &self.0 {
            for (mb, &cb) in &other.0 {
                let mut exponents: BTreeMap<char, u32> = ma.iter().copied().collect();
                for &(symbol, e) in mb {
                    let slot = exponents.entry(symbol).or_insert(0);
                    *slot = slot.checked_add(e)?;
                }
                let term = Poly(BTreeMap::from([(exponents.into_iter().collect(), rat_mul(ca, cb)?)]));
                product = product.add(&term)?;
            }
        }
        Some(product)
    }
}

/// A value as sympy holds it: a 53-bit float (constants only), or an exact rational function `num / den`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// A sympy `Float` of 53 bits.
    Float(f64),
    /// An exact rational function; constants are kept reduced with a denominator of 1.
    Exact {
        /// The numerator.
        num: Poly,
        /// The denominator (never the zero polynomial).
        den: Poly,
    },
}

impl Value {
    /// The exact constant `c`.
    pub(super) fn rational(c: Rational) -> Value {
        Value::Exact { num: Poly::constant(c), den: Poly::constant((1, 1)) }
    }

    /// The exact constant this value is, if it has no symbols.
    fn as_rational(&self) -> Option<Rational> {
        match self {
            Value::Exact { num, den } => {
                let (n, d) = (num.as_constant()?, den.as_constant()?);
                rat_mul(n, rational(d.1, d.0)?)
            }
            Value::Float(_) => None,
        }
    }

    /// Keeps constants reduced so exact arithmetic on numbers stays small.
    fn exact(num: Poly, den: Poly) -> Option<Value> {
        if den.is_zero() {
            return None;
        }
        let value = Value::Exact { num, den };
        Some(match value.as_rational() {
            Some(c) => Value::rational(c),
            None => value,
        })
    }
}

/// The float sympy would use for an exact constant (correctly rounded), when that can be computed exactly here.
fn to_float(v: &Value) -> Option<f64> {
    const EXACT_LIMIT: i128 = 1 << 53;
    match v {
        Value::Float(x) => Some(*x),
        exact => {
            let (n, d) = exact.as_rational()?;
            // Both parts are exactly representable, so one division rounds the true quotient once.
            (n.abs() <= EXACT_LIMIT && d <= EXACT_LIMIT).then(|| n as f64 / d as f64)
        }
    }
}

/// A float value; `None` for infinities and NaN (sympy's `zoo`/`nan` never equal anything here).
pub(super) fn float(x: f64) -> Option<Value> {
    x.is_finite().then_some(Value::Float(x))
}

/// `a + b`.
pub(super) fn add(a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Exact { num: an, den: ad }, Value::Exact { num: bn, den: bd }) => {
            if ad == bd {
                return Value::exact(an.add(bn)?, ad.clone());
            }
            Value::exact(an.mul(bd)?.add(&bn.mul(ad)?)?, ad.mul(bd)?)
        }
        _ => float(to_float(a)? + to_float(b)?),
    }
}

/// `-a`.
pub(super) fn neg(a: &Value) -> Option<Value> {
    match a {
        Value::Exact { num, den } => Some(Value::Exact { num: num.neg()?, den: den.clone() }),
        Value::Float(x) => Some(Value::Float(-x)),
    }
}

/// `a * b`.
pub(super) fn mul(a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Exact { num: an, den: ad }, Value::Exact { num: bn, den: bd }) => {
            Value::exact(an.mul(bn)?, ad.mul(bd)?)
        }
        _ => float(to_float(a)? * to_float(b)?),
    }
}

/// `a / b`; `None` when `b` is zero.
pub(super) fn div(a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Exact { num: an, den: ad }, Value::Exact { num: bn, den: bd }) => {
            if bn.is_zero() {
                return None;
            }
            Value::exact(an.mul(bd)?, ad.mul(bn)?)
        }
        _ => {
            let divisor = to_float(b)?;
            if divisor == 0.0 {
                return None;
            }
            float(to_float(a)? / divisor)
        }
    }
}

/// `base ** exponent` for an exact integer exponent of at most 64 in magnitude.
pub(super) fn pow(base: &Value, exponent: &Value) -> Option<Value> {
    const MAX_EXPONENT: i128 = 64;
    let (e, 1) = exponent.as_rational()? else {
        return None;
    };
    let Value::Exact { num, den } = base else {
        return None;
    };
    if e.abs() > MAX_EXPONENT {
        return None;
    }
    let (mut n, mut d) = (Poly::constant((1, 1)), Poly::constant((1, 1)));
    for _ in 0..e.abs() {
        n = n.mul(num)?;
        d = d.mul(den)?;
    }
    if e < 0 {
        Value::exact(d, n)
    } else {
        Value::exact(n, d)
    }
}
