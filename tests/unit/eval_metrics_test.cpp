// Answer metrics on hand-written cases. Every expected value was worked out by hand from the
// definitions (ours: metrics.h; LLaVA-Med: llava/eval/run_eval.py and eval_metrics/ at
// microsoft/LLaVA-Med ad758b68); docs/EVALUATION.md shows the working for the ones marked [doc].
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eval/metrics.h"
#include "core/error.h"
#include "test_util.h"
#include <fstream>

using namespace hg::eval;

TEST(EvalNormalize, Ours) {
    EXPECT_EQ(normalize_answer("The Left Lung."), "left lung");                       // [doc]
    EXPECT_EQ(normalize_answer("2.5 cm, 1,000 mm"), "2.5 cm 1000 mm");                // [doc]
    EXPECT_EQ(normalize_answer("Patient's X-ray shows TWO masses!"), "patients x ray shows 2 masses");
    EXPECT_EQ(normalize_answer("An MRI"), "mri");
    EXPECT_EQ(normalize_answer("  yes  "), "yes");
    EXPECT_EQ(normalize_answer("..."), "");
    EXPECT_EQ(normalize_answer("none"), "none");  // ours does not map "none" to 0 (LLaVA-Med does)
}

TEST(EvalNormalize, LlavaNormalizeWord) {
    // '-' touches no space -> space; " (" occurs -> '(' deleted; ")" ends the text -> space.
    EXPECT_EQ(llava::normalize_word("left-sided (mild)"), "left sided mild");  // [doc]
    // ", " occurs -> ',' deleted; a final '.' is stripped.
    EXPECT_EQ(llava::normalize_word("x-ray, ap view."), "x ray ap view");
    // a digit,digit comma deletes every punctuation mark; a '.' before a digit stays.
    EXPECT_EQ(llava::normalize_word("1,5 and 2.5."), "15 and 2.5");
    EXPECT_EQ(llava::normalize_word("none of the two"), "0 of 2");
    EXPECT_EQ(llava::normalize_word("dont"), "don't");  // contractions table
    EXPECT_EQ(llava::normalize_word("it's a mass"), "it's mass");  // apostrophes are not punctuation there
}

TEST(EvalOpen, OurTokenScores) {
    // pred {left, upper, lobe}, gt {left, lobe}: common 2, P 2/3, R 1, F1 0.8
    auto s = token_scores("left upper lobe", "the left lobe");
    EXPECT_NEAR(s.precision, 2.0 / 3.0, 1e-12);
    EXPECT_NEAR(s.recall, 1.0, 1e-12);
    EXPECT_NEAR(s.f1, 0.8, 1e-12);
    // multiset: pred {left x2}, gt {left, lung}: common min(2,1) = 1 -> P 1/2, R 1/2, F1 1/2
    s = token_scores("left left", "left lung");
    EXPECT_NEAR(s.precision, 0.5, 1e-12);
    EXPECT_NEAR(s.recall, 0.5, 1e-12);
    EXPECT_NEAR(s.f1, 0.5, 1e-12);
    s = token_scores("right", "left lung");
    EXPECT_EQ(s.f1, 0.0);
    EXPECT_EQ(s.recall, 0.0);
    s = token_scores("", "left");
    EXPECT_EQ(s.f1, 0.0);
    EXPECT_TRUE(exact_match("The left lung.", "left lung"));
    EXPECT_FALSE(exact_match("left lung base", "left lung"));
}

TEST(EvalOpen, LlavaScores) {
    // [doc] pred "left left", gt "left lung": cw {left:2}, rw {left:1, lung:1}; tp = 2 (the
    // prediction's count), fp = 0, fn = 1 -> precision 1, recall 2/3, F1 0.8; exact = 1 type / 2 words.
    auto s = llava::open_scores("left left", "left lung", {});
    EXPECT_NEAR(s.precision, 1.0, 1e-12);
    EXPECT_NEAR(s.recall, 2.0 / 3.0, 1e-12);
    EXPECT_NEAR(s.f1, 0.8, 1e-12);
    EXPECT_NEAR(s.exact, 0.5, 1e-12);
    EXPECT_FALSE(s.open_hit.has_value());
    // pred "the left lung is affected" -> {left, lung, is, affected}; gt "left lung":
    // tp 2, fp 2, fn 0 -> P 1/2, R 1, F1 2/3; exact 2/4.
    const std::vector<std::string> cand = {"left lung", "right lung", "lung"};
    s = llava::open_scores("The left lung is affected", "left lung", cand);
    EXPECT_NEAR(s.precision, 0.5, 1e-12);
    EXPECT_NEAR(s.recall, 1.0, 1e-12);
    EXPECT_NEAR(s.f1, 2.0 / 3.0, 1e-12);
    EXPECT_NEAR(s.exact, 0.5, 1e-12);
    // candidates: "left lung" 2/2, "right lung" 1/2, "lung" 1/1 -> first maximum "left lung"
    ASSERT_TRUE(s.open_hit.has_value());
    EXPECT_EQ(*s.open_hit, 1.0);
    EXPECT_EQ(*llava::open_scores("The left lung is affected", "lung", cand).open_hit, 0.0);
    // no shared word: 0 everywhere
    s = llava::open_scores("kidney", "left lung", {});
    EXPECT_EQ(s.f1, 0.0);
    EXPECT_EQ(s.recall, 0.0);
}

TEST(EvalClosed, OursAndLlava) {
    // "normal" is not the token "no" for us, but contains "no" for LLaVA-Med's substring test.
    EXPECT_FALSE(closed_correct("Normal", "no"));
    EXPECT_EQ(llava::closed_hit("Normal", "no"), 1);  // [doc]
    // wrong yes/no answer: ours counts it wrong; LLaVA-Med drops it from the denominator.
    EXPECT_FALSE(closed_correct("Yes, there is a mass", "no"));
    EXPECT_EQ(llava::closed_hit("Yes, there is a mass", "no"), std::nullopt);  // [doc]
    // neither yes nor no: wrong for both, counted by both.
    EXPECT_FALSE(closed_correct("It is unclear", "yes"));
    EXPECT_EQ(llava::closed_hit("It is unclear", "yes"), 0);
    // "cannot" contains "no": LLaVA-Med drops it, ours counts it wrong.
    EXPECT_EQ(llava::closed_hit("I cannot tell", "yes"), std::nullopt);
    // the first yes/no token decides
    EXPECT_TRUE(closed_correct("There is no effusion", "no"));
    EXPECT_EQ(llava::closed_hit("There is no effusion", "no"), 1);
    EXPECT_TRUE(closed_correct("Yes.", "yes"));
    EXPECT_EQ(yes_no_verdict("no, yes"), "no");
    // other closed answers: exact after normalisation
    EXPECT_TRUE(closed_correct("Axial", "axial"));
    EXPECT_FALSE(closed_correct("axial plane", "axial"));
}

TEST(EvalMcq, ChooseOption) {
    const std::vector<std::string> o = {"CT", "MRI", "X-ray", "Ultrasound"};
    EXPECT_EQ(choose_option("B", o), 1);
    EXPECT_EQ(choose_option("(C)", o), 2);
    EXPECT_EQ(choose_option("d.", o), 3);
    EXPECT_EQ(choose_option("Answer: D", o), 3);
    EXPECT_EQ(choose_option("The answer is B.", o), 1);
    EXPECT_EQ(choose_option("option A", o), 0);
    EXPECT_EQ(choose_option("MRI", o), 1);
    EXPECT_EQ(choose_option("This is an MRI scan", o), 1);
    EXPECT_EQ(choose_option("x ray", o), 2);
    EXPECT_EQ(choose_option("A mass in the liver", o), -1);  // an article, not the letter A
    EXPECT_EQ(choose_option("CT or MRI", o), -1);            // ambiguous
    EXPECT_EQ(choose_option("E", o), -1);                    // not an option
    const std::vector<std::string> o2 = {"lung", "left lung"};
    EXPECT_EQ(choose_option("the left lung", o2), 1);  // exact text wins
    EXPECT_EQ(choose_option("mass in left lung apex", o2), 1);  // longest whole-token match
}
