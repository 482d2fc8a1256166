// Answer scoring for medical VQA (docs/EVALUATION.md says what each number means and where it
// comes from). Two scorers side by side:
//
//  ours (hg::eval::*): one documented normalisation and per-item scores that never drop an item.
//    normalize_answer: ASCII lower case; a '.' between two digits kept ("2.5"), a ',' between two
//    digits removed ("1,000"), apostrophes removed ("patient's" -> "patients"), every other ASCII
//    punctuation character -> space; whitespace-split; the articles a/an/the dropped; the number
//    words zero..ten -> digits; joined by single spaces. Non-ASCII bytes are kept as they are.
//    closed: a yes/no ground truth is matched by the prediction's first "yes"/"no" *token* (so
//    "normal" is not "no"); any other closed answer by exact equality after normalisation. A
//    prediction with no verdict is wrong and stays in the denominator.
//    open: exact match after normalisation; token F1 / precision / recall over token multisets
//    (SQuAD's definition); recall = |pred ∩ gt| / |gt| (the share of ground-truth tokens found).
//
//  llava (hg::eval::llava::*): LLaVA-Med's llava/eval/run_eval.py and eval_metrics/
//    (microsoft/LLaVA-Med, commit ad758b68), re-implemented from its semantics, quirks included:
//    normalize_word's punctuation rules, substring tests for closed answers ("normal" contains
//    "no"; a closed item whose prediction contains "yes" or "no" but not the answer is *dropped*
//    from the denominator, one containing neither scores 0), its recall counting the prediction's
//    repeats, its "exact match" (= matched reference word types / prediction words) and its "open
//    accuracy" (the most similar entry of a candidate answer list must equal the answer).
//
//  mcq: the option a free-text answer chooses (a letter "B", "(B)", "B.", "option B", "answer: B",
//    or an option's text), accuracy against the ground-truth option.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hg::eval {

// ---- ours ----------------------------------------------------------------------------------
std::string normalize_answer(std::string_view text);
std::vector<std::string> answer_tokens(std::string_view text);  // normalize_answer split on ' '

struct TokenScores {
    double f1 = 0, precision = 0, recall = 0;
};
// Token multiset overlap of the normalised texts. Both empty -> 1/1/1; one empty -> 0/0/0.
TokenScores token_scores(std::string_view prediction, std::string_view truth);
bool exact_match(std::string_view prediction, std::string_view truth);
// The first "yes" or "no" token of the normalised prediction ("" if none).
std::string yes_no_verdict(std::string_view prediction);
bool closed_correct(std::string_view prediction, std::string_view truth);

// ---- LLaVA-Med's run_eval.py ------------------------------------------------------------------
namespace llava {

std::string normalize_word(std::string_view text);  // eval_metrics/glossary.py normalize_word
// Closed item: 1 hit, 0 miss, nullopt: not counted (prediction has "yes"/"no" but not the answer).
// Inputs raw; the script lower-cases and normalises each once.
std::optional<int> closed_hit(std::string_view prediction, std::string_view truth);

struct OpenScores {
    double f1 = 0, precision = 0, recall = 0;  // calculate_f1score
    double exact = 0;                          // calculate_exactmatch
    std::optional<double> open_hit;            // calculate_appearance_with_normalization (with candidates)
};
// Open item, inputs raw (lower-cased and normalised as the script does, twice for the metrics).
// `candidates`: the candidate answer list (answer_list.json); empty: no open_hit.
OpenScores open_scores(std::string_view prediction, std::string_view truth, std::span<const std::string> candidates);

}  // namespace llava

// ---- multiple choice --------------------------------------------------------------------------
// The option chosen by a free-text answer: its index in `options` (options[i] is letter 'A'+i), or
// -1 when none (or an ambiguous text match). A letter form wins over text; of the options whose
// normalised text occurs as whole tokens in the answer, an exact match wins, else the longest, a tie
// between equally long ones chooses none.
int choose_option(std::string_view answer, std::span<const std::string> options);

}  // namespace hg::eval
