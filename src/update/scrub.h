// Removing patient identifiers from free text before it becomes training data (docs/UPDATES.md).
//
// What is replaced (HIPAA Safe Harbor's text identifiers that occur in clinical notes), each by a
// typed placeholder so the sentence still reads:
//   [EMAIL]  e-mail addresses
//   [ID]     record / MRN / accession / patient-id numbers after their label, SSNs, and any run of
//            7+ digits (an unlabelled record number)
//   [PHONE]  phone and fax numbers (10 digits in the usual groupings, optional +country code)
//   [DATE]   dates: 2024-03-15, 03/15/2024, 15.03.24, March 15, 2024, 15 Mar 2024, Mar 2024
//   [NAME]   the one or two capitalised words after a title (Mr, Mrs, Ms, Miss, Dr, Prof) or a
//            label (Patient:, Name:, Patient name:, Pt:)
//   [AGE>89] ages of 90 and over ("93-year-old", "aged 95", "age: 91", "92 yo")
// Medical text is left alone: "T2 weighted", "C5-C6", "3 cm", "5 mm", "left lower lobe", "45-year-old".
// A rule-based scrubber removes what it recognises; it is a filter before human review, not a
// guarantee (a name without a title or label is not found).
#pragma once
#include <string>
#include <string_view>

namespace hg::update {

std::string scrub_identifiers(std::string_view text);

}  // namespace hg::update
