#include "update/scrub.h"

#include <regex>
#include <vector>

namespace hg::update {

namespace {

struct Rule {
    std::regex re;
    const char* replacement;  // $1 keeps a label or title
};

const std::vector<Rule>& rules() {
    using std::regex;
    constexpr auto icase = regex::ECMAScript | regex::icase;
    const std::string month =
        "(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
        "oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
    // Order matters: e-mails before names (a name inside an address), labelled ids and phones before
    // dates and bare digit runs (their digits would otherwise be read as those).
    static const std::vector<Rule> r = {
        {regex(R"([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"), "[EMAIL]"},
        {regex(R"(\b(MRN|MR#|medical record(?: number| no\.?| #)?|record(?: number| no\.?| #)|accession(?: number| no\.?| #)?|acc\.? ?#|patient id|pt id|ssn|id(?: number| no\.?)?)(\s*[:#]?\s*))"
               R"([A-Za-z]{0,3}-?\d[A-Za-z0-9-]*)", icase),
         "$1$2[ID]"},
        {regex(R"(\b\d{3}-\d{2}-\d{4}\b)"), "[ID]"},
        {regex(R"((?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b)"), "[PHONE]"},
        {regex(R"(\b\d{4}-\d{1,2}-\d{1,2}\b)"), "[DATE]"},
        {regex(R"(\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})\b)"), "[DATE]"},
        {regex("\\b" + month + "\\.?\\s+\\d{1,2}(?:st|nd|rd|th)?,?\\s+\\d{4}\\b", icase), "[DATE]"},
        {regex("\\b\\d{1,2}(?:st|nd|rd|th)?\\s+(?:of\\s+)?" + month + "\\.?,?\\s+\\d{4}\\b", icase), "[DATE]"},
        {regex("\\b" + month + "\\.?\\s+\\d{4}\\b", icase), "[DATE]"},
        {regex(R"(\b\d{7,}\b)"), "[ID]"},
        // Names: the title/label is case-insensitive, the name itself must be capitalised.
        {regex(R"(\b((?:Mrs?|Ms|Miss|Dr|Prof)\.?\s+)[A-Z][a-zA-Z'-]+(?:\s+[A-Z][a-zA-Z'-]+)?)"),
         "$1[NAME]"},
        {regex(R"(\b((?:[Pp]atient(?: [Nn]ame)?|[Nn]ame|[Pp]t)\s*:\s*)[A-Z][a-zA-Z'-]+(?:,?\s+[A-Z][a-zA-Z'-]+)?)"),
         "$1[NAME]"},
        // Ages over 89 (Safe Harbor folds them into one category).
        {regex(R"(\b(?:9\d|1[0-4]\d)(?:\s*-?\s*(?:years?|yrs?)(?:\s*-?\s*old)?|\s*-?\s*y/?o\b|\s*-?\s*y\.o\.))", icase), "[AGE>89]"},
        {regex(R"(\b(ages?d?\s*:?\s*)(?:9\d|1[0-4]\d)\b)", icase), "$1[AGE>89]"},
    };
    return r;
}

}  // namespace

std::string scrub_identifiers(std::string_view text) {
    std::string s(text);
    for (const Rule& rule : rules()) s = std::regex_replace(s, rule.re, rule.replacement);
    return s;
}

}  // namespace hg::update
