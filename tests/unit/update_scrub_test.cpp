// The identifier scrubber on a table of hand-written cases: what must change (names after titles
// and labels, dates, record numbers, phones, e-mails, ages over 89) and medical text that must not.
#include <gtest/gtest.h>

#include "update/scrub.h"

namespace {

using hg::update::scrub_identifiers;

struct Case {
    const char* in;
    const char* want;
};

TEST(UpdateScrub, RemovesIdentifiers) {
    const Case cases[] = {
        {"Mr Smith has a left lower lobe opacity.", "Mr [NAME] has a left lower lobe opacity."},
        {"Seen by Dr. Jane Doe today", "Seen by Dr. [NAME] today"},
        {"Mrs O'Brien-Kelly, follow-up", "Mrs [NAME], follow-up"},
        {"Patient: John Miller", "Patient: [NAME]"},
        {"Name: Anna", "Name: [NAME]"},
        {"Patient name: Li, Wei. Chest CT.", "Patient name: [NAME]. Chest CT."},
        {"Scan on 2024-03-15 shows", "Scan on [DATE] shows"},
        {"compared with 03/15/2024", "compared with [DATE]"},
        {"prior 15.03.24 exam", "prior [DATE] exam"},
        {"dated March 15, 2024.", "dated [DATE]."},
        {"on 15 Mar 2024 and 2nd of June 2023", "on [DATE] and [DATE]"},
        {"since Sept 2021", "since [DATE]"},
        {"MRN: 12345678", "MRN: [ID]"},
        {"MRN 778812", "MRN [ID]"},
        {"accession #A-99812 reviewed", "accession #[ID] reviewed"},
        {"Record number 5512", "Record number [ID]"},
        {"patient id: PX-4471", "patient id: [ID]"},
        {"SSN 123-45-6789", "SSN [ID]"},
        {"ref 8812345 in the chart", "ref [ID] in the chart"},
        {"call (555) 123-4567 or +1 555.987.6543", "call [PHONE] or [PHONE]"},
        {"phone 555-123-4567", "phone [PHONE]"},
        {"mail jane.doe@hospital.example.org now", "mail [EMAIL] now"},
        {"a 93-year-old woman", "a [AGE>89] woman"},
        {"aged 95, fall", "aged [AGE>89], fall"},
        {"age: 91", "age: [AGE>89]"},
        {"92 yo male", "[AGE>89] male"},
        {"104 years old", "[AGE>89]"},
    };
    for (const Case& c : cases) EXPECT_EQ(scrub_identifiers(c.in), c.want) << "input: " << c.in;
}

TEST(UpdateScrub, LeavesMedicalTextAlone) {
    const char* keep[] = {
        "T2 weighted image of the brain",
        "disc herniation at C5-C6 and L4-L5",
        "a 3 cm mass in the left lower lobe",
        "nodule of 5 mm, 1.5 cm from the pleura",
        "a 45-year-old man with cough",
        "aged 89, stable",
        "MR Angiography shows no aneurysm",
        "MS lesions in the periventricular white matter",
        "yes",
        "no",
        "right upper quadrant, 2 of 3 views",
        "grade 2/4 systolic murmur",
        "ejection fraction 55-60%",
        "IV contrast 100 ml",
        "T1 and T2 FLAIR hyperintensity",
        "pneumothorax",
        "the liver measures 16.5 cm",
        "HU 40 to 60",
    };
    for (const char* s : keep) EXPECT_EQ(scrub_identifiers(s), s);
}

TEST(UpdateScrub, IsIdempotent) {
    const std::string once = scrub_identifiers("Dr. House saw Mr Wilson on 2024-01-02, MRN: 99881234");
    EXPECT_EQ(once, "Dr. [NAME] saw Mr [NAME] on [DATE], MRN: [ID]");
    EXPECT_EQ(scrub_identifiers(once), once);
}

}  // namespace
