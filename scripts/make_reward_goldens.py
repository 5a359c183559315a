#!/usr/bin/env python3
"""Writes the reward goldens that stasc's tests compare against (tests/fixtures/rewards/):

- cases.jsonl: mixed QA (in_acc, em, f1; modes default and final; hand-written and seeded random texts) and math
  (math_acc) cases, each with the score the reference implementation gives ("expected", and "expected_repr" =
  Python's repr of the float, for exact comparison). tests/it/reward_goldens.rs must agree on every line.
- known_divergences.jsonl: math cases where the reference needs sympy's symbolic algebra or LaTeX that stasc's
  subset does not render; stasc scores them 0 and the reference 1. The Rust test checks they still diverge, so the
  list stays true (move a case to cases.jsonl once stasc handles it).
- latex2text.jsonl: pylatexenc's rendering of the LaTeX constructs stasc's `latex_to_text` supports.

Run with the project venv after `pip install regex sympy pylatexenc word2number`:
    ~/.cache/stasc/venv/bin/python scripts/make_reward_goldens.py
The reference functions are transcribed in scripts/reward_reference.py (attributed there).
"""

import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pylatexenc import latex2text  # noqa: E402

import reward_reference as ref  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "rewards")
QA_MARKER = "Final Answer:"
MATH_MARKER = "Final Answer: The final answer is"

# (gold aliases, generation): every pair is scored with in_acc, em and f1, in modes default and final.
QA_PAIRS = [
    (["Paris"], "Paris"),
    (["Paris"], "The capital of France is Paris."),
    (["Paris"], "Step-by-step reasoning: France's capital.\nFinal Answer: Paris"),
    (["Paris"], "Step-by-step reasoning: Paris is big.\nFinal Answer: London"),
    (["Paris"], "Parisian cuisine is famous"),
    (["Paris"], "final answer: PARIS!!!"),
    (["Paris"], "FINAL ANSWER:Paris\r\n"),
    (["Paris"], "Final Answer: Rome. Final Answer: Paris"),
    (["Paris", "City of Light"], "Final Answer: the city of light"),
    (["New York City", "NYC"], "I think it's NYC."),
    (["New York City", "NYC"], "Final Answer: New York"),
    (["New York City"], "new york city, new york"),
    (["The Beatles"], "Final Answer: Beatles"),
    (["The Beatles"], "a beatles song"),
    (["an apple"], "Final Answer: The Apple"),
    (["Beyoncé"], "Final Answer: Beyonce\u0301 Knowles"),
    (["Beyoncé"], "Final Answer: Beyonce"),
    (["São Paulo"], "Final Answer: são paulo!"),
    (["São Paulo"], "Final Answer: Sao Paulo"),
    (["Zürich"], "Final Answer: Zu\u0308rich"),
    (["1,000"], "Final Answer: 1 000 people"),
    (["1,000"], "Final Answer: 1000 people"),
    (["1,000"], "Final Answer: 1,000"),
    (["U.S."], "Final Answer: the U S"),
    (["U.S.A."], "usa"),
    (["rock-n-roll"], "Final Answer: rock n roll"),
    (["O'Brien"], "Final Answer: o brien"),
    (["O'Brien"], "Final Answer: OBrien"),
    (["42"], "Final Answer: 42nd"),
    (["42"], "Final Answer: 42 nd"),
    (["3.14"], "Final Answer: about 3.14159"),
    (["3.14"], "pi is 3 . 14"),
    (["Barack Obama"], "Final Answer: President Barack Hussein Obama"),
    (["Barack Obama", "Obama"], "Final Answer: Michelle Obama"),
    (["George Washington"], "Final Answer: Washington, George"),
    (["the the the"], "Final Answer: anything at all"),
    ([""], "Final Answer: something"),
    ([""], ""),
    (["x"], ""),
    (["x"], "Final Answer:"),
    (["北京"], "Final Answer: 答案是北京"),
    (["北京"], "Final Answer: 北京"),
    (["🍎"], "Final Answer: I like 🍎 a lot"),
    (["ΟΔΟΣ"], "Final Answer: οδος"),
    (["ΟΔΟΣ"], "Final Answer: ΟΔΟΣ"),
    (["İstanbul"], "Final Answer: istanbul"),
    (["İstanbul"], "Final Answer: İSTANBUL"),
    (["Straße"], "Final Answer: STRASSE"),
    (["Paris Hilton"], "Final Answer: Paris\u00a0Hilton"),
    (["Paris Hilton"], "Final Answer: Paris\u2003\u2003Hilton"),
    (["Paris Hilton"], "Final Answer: Paris\x1cHilton"),
    (["Paris Hilton"], "Final Answer: Paris\u200bHilton"),
    (["a b"], "Final Answer: a\tb"),
    (["the end"], "Final Answer: the_end"),
    (["thé"], "Final Answer: the"),
    (["New York"], "Final Answer: New\nYork"),
    (["Mount Everest"], "Step-by-step reasoning: tallest.\nFinal Answer: Mount Everest (8,849 m)"),
    (["Mount Everest"], "Final Answer: Everest"),
    (["Leonardo da Vinci"], "Final Answer: da Vinci, Leonardo"),
    (["Leonardo da Vinci", "da Vinci"], "Final Answer: Leonardo"),
    (["cat"], "Final Answer: cat cat cat"),
    (["cat cat"], "Final Answer: cat"),
    (["a", "an"], "Final Answer: a"),
    (["1984"], "İ Final Answer:1984"),
    (["ﬁsh"], "Final Answer: fish"),
    (["½"], "Final Answer: ½ cup"),
    (["Barack Obama"], "barack obama"),
    (["New York City", "NYC"], "NYC!"),
    (["São Paulo"], "SÃO PAULO."),
    (["The Beatles"], "Beatles"),
    (["1,000"], "1 000"),
    (["Leonardo da Vinci", "da Vinci"], "Da Vinci"),
]

# (gold, generation) for math_acc, scored in mode "final" with the math marker (the reference forces "final").
MATH_PAIRS = [
    ("5", "The result is \\boxed{5}."),
    ("5", "The result is \\boxed{6}."),
    ("5", "\\boxed{5} wait, no: \\boxed{6}"),
    ("5", "\\boxed{6} wait, no: \\boxed{5}"),
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{2}}"),
    ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}"),
    ("\\frac{1}{2}", "\\boxed{\\tfrac12}"),
    ("\\frac{1}{2}", "\\boxed{1/2}"),
    ("\\frac{1}{2}", "\\boxed{0.5}"),
    ("\\frac{1}{2}", "\\boxed{.5}"),
    ("\\frac{1}{2}", "\\boxed{0.50}"),
    ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}"),
    ("\\frac{2}{4}", "\\boxed{\\frac{1}{2}}"),
    ("\\frac{2}{4}", "\\boxed{0.5}"),
    ("\\frac{1}{4}", "\\boxed{0.25}"),
    ("\\frac{3}{4}", "\\boxed{0.75}"),
    ("0.75", "\\boxed{\\frac{3}{4}}"),
    ("0.75", "\\boxed{3/4}"),
    ("\\frac{1}{3}", "\\boxed{0.333}"),
    ("\\frac{1}{3}", "\\boxed{0.3333333}"),
    ("\\frac{3}{10}", "\\boxed{0.3}"),
    ("\\frac{7}{8}", "\\boxed{0.875}"),
    ("\\frac{5}{2}", "\\boxed{2.5}"),
    ("\\frac{5}{2}", "\\boxed{2\\frac{1}{2}}"),
    ("-\\frac{1}{2}", "\\boxed{-0.5}"),
    ("-\\frac{1}{2}", "\\boxed{-\\frac{1}{2}}"),
    ("-\\frac{1}{2}", "\\boxed{\\frac{-1}{2}}"),
    ("\\frac{10}{3}", "\\boxed{\\frac{10}{3}}"),
    ("\\frac{10}{3}", "\\boxed{3.3333333333}"),
    ("2", "\\boxed{2.0}"),
    ("2", "\\boxed{2.00}"),
    ("2", "\\boxed{\\frac{4}{2}}"),
    ("2", "\\boxed{4/2}"),
    ("1000", "\\boxed{1,000}"),
    ("1000", "\\boxed{1{,}000}"),
    ("1000000", "\\boxed{1,000,000}"),
    ("1,000", "\\boxed{1000}"),
    ("12", "\\boxed{012}"),
    ("-3", "so the answer is -3"),
    ("-3", "so the answer is -3."),
    ("-3", "\\boxed{-3}"),
    ("3", "\\boxed{-3}"),
    ("90", "\\boxed{90^\\circ}"),
    ("90^\\circ", "\\boxed{90}"),
    ("90^\\circ", "\\boxed{90^{\\circ}}"),
    ("90", "\\boxed{90 degrees}"),
    ("30", "The angle is 30°."),
    ("5", "\\boxed{5 \\text{ cm}}"),
    ("5", "\\boxed{5\\text{ meters}}"),
    ("5", "\\boxed{5 \\text{cm}^2}"),
    ("10", "\\boxed{10 inches}"),
    ("10", "\\boxed{10\\text{ feet}}"),
    ("60", "the answer is 60 mph"),
    ("3", "\\boxed{3 \\text{ hours}}"),
    ("12", "\\boxed{\\$12}"),
    ("\\$12", "\\boxed{12}"),
    ("12.50", "\\boxed{\\$12.50}"),
    ("12.5", "\\boxed{\\$12.50}"),
    ("25", "\\boxed{25\\%}"),
    ("25\\%", "\\boxed{25}"),
    ("25\\%", "\\boxed{0.25}"),
    ("(1,2)", "\\boxed{(1, 2)}"),
    ("(1,2)", "\\boxed{(2, 1)}"),
    ("(1,2)", "\\boxed{\\left( 1, 2 \\right)}"),
    ("(0.5,2)", "\\boxed{(\\frac{1}{2}, 2)}"),
    ("(\\frac{1}{2},2)", "\\boxed{(0.5, 2)}"),
    ("[1,2)", "\\boxed{(1,2)}"),
    ("[-2,7]", "\\boxed{[-2, 7]}"),
    ("(1,2,3)", "\\boxed{(1,2)}"),
    ("(3,-1)", "\\boxed{(3,-1)}"),
    ("(3,-1)", "The point is (3, -1), so the answer is (3,-1)"),
    ("1,2", "\\boxed{1, 2}"),
    ("\\{1,2\\}", "\\boxed{\\{1, 2\\}}"),
    ("\\sqrt{2}", "\\boxed{\\sqrt2}"),
    ("\\sqrt{2}", "\\boxed{\\sqrt{2}}"),
    ("2\\sqrt{3}", "\\boxed{2 \\sqrt{3}}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{3}}{2}}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\sqrt{3}/2}"),
    ("\\pi", "\\boxed{\\pi}"),
    ("2\\pi", "\\boxed{2 \\pi}"),
    ("\\infty", "\\boxed{\\infty}"),
    ("(-\\infty, 3]", "\\boxed{(-\\infty, 3]}"),
    ("\\text{(C)}", "\\boxed{\\text{(C)}}"),
    ("\\text{(C)}", "\\boxed{C}"),
    ("C", "The answer is (C)."),
    ("\\text{Monday}", "\\boxed{\\text{Monday}}"),
    ("x^2+1", "\\boxed{x^2 + 1}"),
    ("x^2+1", "\\boxed{1+x^2}"),
    ("42", "We get 40 + 2, so the answer is 42."),
    ("42", "Thus, the answer is $42$."),
    ("42", "The final answer is $42$. I hope it is correct."),
    ("42", "So the final answer is 42"),
    ("7", "Adding gives 3 and then 7"),
    ("7", "Adding gives 7 and then 3"),
    ("1234", "total: 1,234"),
    ("3.5", "it costs 3.50 dollars"),
    ("-0.5", "the value drops to -.5"),
    ("0.5", "the value is .5"),
    ("5", "five"),
    ("5", "the answer is five"),
    ("21", "the answer is twenty-one"),
    ("1", "the answer is one third"),
    ("3", "no answer at all"),
    ("0", "nothing"),
    ("5", "\\boxed{x = 5}"),
    ("5", "\\boxed{k=5}"),
    ("10", "\\boxed{\\text{10}}"),
    ("\\frac{1}{6}", "\\boxed{\\frac{1}{6}} is the probability"),
    ("\\frac{1}{6}", "the answer is: 1/6."),
    ("6", "\\boxed{2(3)}"),
    ("8", "\\boxed{2^3}"),
    ("1024", "\\boxed{2^{10}}"),
    ("\\frac{1}{8}", "\\boxed{2^{-3}}"),
    ("0.3", "\\boxed{0.1+0.2}"),
    ("\\frac{3}{10}", "\\boxed{\\frac{1}{10}+\\frac{2}{10}}"),
    ("\\frac{7}{4}", "\\boxed{1\\frac{3}{4}}"),
    ("\\frac{7}{4}", "\\boxed{1 \\frac{3}{4}}"),
    ("2\\frac{1}{2}", "\\boxed{2.5}"),
    ("3i", "\\boxed{3j}"),
    ("\\boxed{5}", "\\boxed{5}"),
    ("5", "\\boxed{\\boxed{5}}"),
    ("5", "boxed"),
    ("5", "\\boxed 5$."),
    ("5", "\\boxed{5"),
    ("5", "\u043a\u0438\\boxed{5}\u043a\u0438"),
    ("5", "答案是 5\n\n其他"),
    ("2", "5 apples and 2 pears, the answer is 2 pears"),
    ("100", "\\boxed{100\\text{ dollars}}"),
    ("18", "\\boxed{18 \\mbox{ cm}}"),
    ("\\$18.90", "\\boxed{18.90}"),
    ("1.5", "\\boxed{1\\frac{1}{2}}"),
    ("\\frac{9}{2}", "\\boxed{4.5}"),
    ("4.5", "\\boxed{\\frac{9}{2}}"),
    ("4.5", "\\boxed{9/2}"),
    ("2.25", "\\boxed{\\frac{9}{4}}"),
    ("0.125", "\\boxed{1/8}"),
    ("0.1", "\\boxed{\\frac{1}{10}}"),
    ("10^{-1}", "\\boxed{0.1}"),
    ("2 million", "\\boxed{2000000}"),
    ("8", "\\boxed{8}\\text{ (eight)}"),
    ("17", "\\begin{align} x &= 17 \\end{align} \\boxed{17}"),
    ("[1,5]", "\\boxed{[1,5]}"),
    ("(-1,1)", "\\boxed{(-1,1)}"),
    ("(2,3)", "\\boxed{(2,3)}\n"),
    ("-\\frac{3}{2}", "\\boxed{-1.5}"),
    ("\\frac{-3}{2}", "\\boxed{-3/2}"),
    ("\\frac{3}{-2}", "\\boxed{-1.5}"),
    ("11", "\\boxed{\\mathbf{11}}"),
    ("\\mathbf{11}", "\\boxed{11}"),
    ("50", "\\boxed{50\\%}"),
    ("0.5", "\\boxed{50\\%}"),
    ("5\\%", "\\boxed{0.05}"),
    ("72", "\\boxed{72^\\circ \\text{F}}"),
    ("3", "answer: 3 m"),
    ("6", "\\boxed{6 \\, \\text{cm}}"),
    ("7", "\\boxed{\\textbf{7}}"),
    ("6", "\\boxed{\\sqrt{36}}"),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}"),
    ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}"),
    ("\\frac{x}{2}", "\\boxed{0.5x}"),
    ("\\frac{x}{2}", "\\boxed{x/2}"),
    ("(x+1)^2", "\\boxed{x^2+2x+1}"),
    ("\\frac{1}{x}", "\\boxed{x^{-1}}"),
    ("ab", "\\boxed{ba}"),
    ("y=2x+3", "\\boxed{y = 3 + 2x}"),
]


# Random QA texts over characters that stress normalisation (articles, punctuation, Unicode spaces, combining
# marks, case mappings that change length, CJK, emoji, the marker); seeded, all kept whatever they score.
RANDOM_QA_ATOMS = [
    "Paris", "the", "The", "a", "an", "A", "New", "York", "city", ",", ".", "!", "'", "-", "_", " ", "  ", "\t", "\n",
    "\u00a0", "\x1c", "é", "e\u0301", "Ü", "ß", "İ", "Σ", "ΟΔΟΣ", "北京", "🍎", "1", "000", "1,000", "3.14", "U.S.", "(",
    ")", "Final Answer:", "final answer:", "\r", "\u200b", "½", "²", "ﬁ", "ǅ", "\u0300", "_the_", "an_", "theatre",
]
RANDOM_QA_CASES = 300


def random_qa_pairs(seed=20250311):
    rng = random.Random(seed)

    def text(n):
        return "".join(rng.choice(RANDOM_QA_ATOMS) for _ in range(rng.randint(0, n)))

    return [([text(4) for _ in range(rng.randint(1, 2))], text(12)) for _ in range(RANDOM_QA_CASES)]


def jsonl(path, rows):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def case(reward, mode, marker, gold, answer, score):
    score = float(score)
    return {"reward": reward, "mode": mode, "marker": marker, "gold": gold, "answer": answer,
            "expected": score, "expected_repr": repr(score)}


def outside_exact_domain(expr):
    """True when stasc's exact evaluator (rationals, 53-bit floats, rational functions of one-letter symbols) cannot
    evaluate `expr` as sympy does: multi-letter or non-ASCII names (sqrt, pi, ...), or floats mixed with symbols."""
    names = re.findall(r"[^\W\d_]+", expr)
    if any(len(n) > 1 or not n.isascii() for n in names):
        return True
    return bool(names) and re.search(r"\d\.|\.\d", expr) is not None


def needs_symbolic_algebra(gold, answer):
    """True when the reference decides this math case with sympy on an expression outside stasc's exact domain.
    Decided from the reference's own control flow and the expressions, not from stasc's result."""
    truth = ref.extract_answer(answer)
    if ref.mathd_normalize_answer(truth) == ref.mathd_normalize_answer(gold):
        return False
    t, g = ref._normalize(truth), ref._normalize(gold)
    if t == g or len(g) == 0:
        return False
    t_elems, g_elems = ref.split_tuple(t), ref.split_tuple(g)
    if len(t_elems) != len(g_elems) or (len(t_elems) > 1 and (t[0] != g[0] or t[-1] != g[-1])):
        return False
    return any(
        not (ref._is_frac(a) and ref._is_frac(b))
        and ref._str_is_int(a) == ref._str_is_int(b)
        and outside_exact_domain(f"({a})-({b})")
        for a, b in zip(t_elems, g_elems)
    )


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    cases, divergences = [], []
    for gold, answer in QA_PAIRS:
        for reward in ("in_acc", "em", "f1"):
            for mode in ("default", "final"):
                cases.append(case(reward, mode, QA_MARKER, gold, answer, ref.evaluate(reward, mode, QA_MARKER, gold, answer)))
    rng = random.Random(7)
    for gold, answer in random_qa_pairs():
        reward, mode = rng.choice(("in_acc", "em", "f1")), rng.choice(("default", "final"))
        cases.append(case(reward, mode, QA_MARKER, gold, answer, ref.evaluate(reward, mode, QA_MARKER, gold, answer)))
    for gold, answer in MATH_PAIRS:
        score = ref.evaluate("math_acc", "final", MATH_MARKER, [gold], answer)
        row = case("math_acc", "final", MATH_MARKER, [gold], answer, score)
        if score == 1 and needs_symbolic_algebra(gold, answer):
            row["reason"] = "equality needs sympy beyond rationals and one-letter symbols (sqrt, pi, names)"
            divergences.append(row)
        else:
            cases.append(row)
    # Gold given as several aliases, and mode "default" (ignored by math_acc, as in the reference).
    for gold, answer in [(["4", "\\frac{1}{2}"], "\\boxed{0.5}"), (["4", "5"], "\\boxed{6}")]:
        cases.append(case("math_acc", "default", MATH_MARKER, gold, answer,
                          ref.evaluate("math_acc", "default", MATH_MARKER, gold, answer)))
    jsonl(os.path.join(OUT_DIR, "cases.jsonl"), cases)
    jsonl(os.path.join(OUT_DIR, "known_divergences.jsonl"), divergences)

    renderer = latex2text.LatexNodes2Text()
    symbols = ("pi cdot times div infty le leq ge geq neq approx sim equiv in notin cup cap setminus subset subseteq "
               "supset supseteq emptyset varnothing pm mp circ ast star perp parallel mid vert angle prime textdegree "
               "ldots dots cdots to rightarrow leftarrow Rightarrow lfloor rfloor lceil rceil langle rangle quad qquad "
               "sin cos tan log ln exp max min lim alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta "
               "iota kappa lambda mu nu xi omicron varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi "
               "omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega left right ne limits displaystyle "
               "bmod mod gcd deg arg cot sec csc triangle implies iff cdotp colon degree").split()
    latex_inputs = ["\\" + s for s in symbols] + ["\\" + s + "  x{y}" for s in symbols] + [
        " \\frac{1}{2}", "\\frac12", "\\frac 1 2", "\\frac{a+b}{c}", "\\frac{\\frac{1}{2}}{3}", "-\\frac{1}{2}",
        "\\nicefrac{3}{4}", "\\sqrt{2}", "\\sqrt2", "\\sqrt {2}x", "\\sqrt[3]{8}", "\\frac{\\sqrt{3}}{2}",
        "\\text{ and }", "\\text {a} b", "\\textbf{5}", "\\textit{x}", "\\textrm{x}", "\\textsc{x}", "\\textsl{x}",
        "\\emph{x}", "\\mathrm{cm}^2", "\\overline{AB}", "\\underline{x}", "\\boxed{5}", "\\mathbb{R}", "\\mathbb Z",
        "\\mathbb{N}", "\\mathbb{Q}", "\\mathbb{C}", "x\\in\\mathbb{Z}", "\\left( 1 \\right)", "\\left\\{1\\right\\}",
        "\\{1, 2\\}", "a\\\\b", "5\\%", "\\$5", "\\#", "\\_", "\\&", "\\|x\\|", "\\, 3", "2\\,\\pi", "\\; x", "\\: x",
        "\\ x", "\\!x", "~", "{1}{2}", "x^{2}", "x_{3}", "2^\\circ", "(1,\\ 2)", "[1, 2)", "\\pi r^2", "3\\cdot 5",
        "1 + 2", "a  b", "\\ne3", "\\alpha\\beta", "\\mathbf{11}", "\\mathbf{v}+1", "\\mathbb{1}",
        "\\mathbb{ABCHNPQRZ}", "\\mathit{hx}", "\\mathcal{BEFHILMRegoA}", "\\mathscr{L}", "\\mathfrak{CHIRZa}",
        "\\mathsf{Ab1}", "\\mathtt{xY}", "{1", "a{b{c", "a}b", "}", "\\boxed{", "\\text{(A)", "\\frac{1}{", "\\sqrt{",
        "\\mbox{x} y", "\\mbox{", "\\", "a\\", "\\text{\\",
    ]
    jsonl(os.path.join(OUT_DIR, "latex2text.jsonl"),
          [{"input": s, "output": renderer.latex_to_text(s)} for s in latex_inputs])
    print(f"{len(cases)} cases, {len(divergences)} known divergences, {len(latex_inputs)} LaTeX renderings")


if __name__ == "__main__":
    main()
