#include "server/request.h"

#include "core/base64.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>

namespace hg::server {

using json = nlohmann::json;

void bad_request(const std::string& message) { throw ApiError(400, "invalid_request_error", message); }

namespace {


const char* type_name(const json& j) { return j.type_name(); }

// The typed getters: each names the field and the expected type.
const json* member(const json& obj, const char* key) {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const json& v, const std::string& field) {
    if (!v.is_string()) bad_request(field + ": expected a string, got " + type_name(v));
    return v.get<std::string>();
}

int64_t get_int(const json& v, const std::string& field, int64_t lo, int64_t hi) {
    if (!v.is_number_integer() && !v.is_number_unsigned()) {
        // 3.0 is accepted as 3 (JavaScript clients send whole numbers as floats)
        if (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>()) &&
            std::fabs(v.get<double>()) < 9e15)
            ;
        else
            bad_request(field + ": expected an integer, got " + type_name(v));
    }
    const double d = v.get<double>();
    if (d < double(lo) || d > double(hi))
        bad_request(field + ": must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    return v.is_number_unsigned() ? int64_t(v.get<uint64_t>()) : v.is_number_integer() ? v.get<int64_t>() : int64_t(d);
}

double get_number(const json& v, const std::string& field, double lo, double hi) {
    if (!v.is_number()) bad_request(field + ": expected a number, got " + type_name(v));
    const double d = v.get<double>();
    if (!(d >= lo && d <= hi)) bad_request(field + ": must be between " + json(lo).dump() + " and " + json(hi).dump());
    return d;
}

bool get_bool(const json& v, const std::string& field) {
    if (!v.is_boolean()) bad_request(field + ": expected true or false, got " + type_name(v));
    return v.get<bool>();
}

json parse_object(std::string_view body) {
    json j;
    try {
        j = json::parse(body.begin(), body.end());
    } catch (const json::parse_error& e) {
        // nlohmann's message says where ("at line 1, column 12") and what; it quotes at most a token
        bad_request(std::string("malformed JSON: ") + e.what());
    } catch (const json::exception& e) {
        // a number beyond double ("1E400") is out_of_range.406, not a parse_error (found by
        // fuzz_server_request); it is still the client's malformed body, not our 500
        bad_request(std::string("malformed JSON: ") + e.what());
    }
    if (!j.is_object()) bad_request(std::string("the body must be a JSON object, got ") + type_name(j));
    return j;
}

}  // namespace

std::vector<uint8_t> decode_base64(std::string_view s, std::string_view field) {
    const std::string f(field);
    if (s.empty()) bad_request(f + ": empty base64 data");
    std::string bytes, why;
    if (!base64_decode(s, bytes, &why)) bad_request(f + ": invalid base64 (" + why + ")");
    return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

std::string encode_base64(std::span<const uint8_t> b) { return base64_encode(b); }

int64_t parse_id(std::string_view s, std::string_view field) {
    int64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size() || v <= 0)
        bad_request(std::string(field) + ": expected a positive integer id");
    return v;
}

ImageRef parse_image_url(std::string_view url, std::string_view field) {
    const std::string f(field);
    ImageRef r;
    if (url.rfind("upload:", 0) == 0) {
        r.upload_id = parse_id(url.substr(7), f + " (upload:<id>)");
        return r;
    }
    if (url.rfind("data:", 0) != 0)
        bad_request(f + ": expected a data URL (data:image/png;base64,...) or upload:<id>; remote URLs are not fetched");
    const size_t comma = url.find(',');
    if (comma == std::string_view::npos) bad_request(f + ": data URL without ','");
    std::string_view meta = url.substr(5, comma - 5);
    constexpr std::string_view kB64 = ";base64";
    if (meta.size() < kB64.size() || meta.substr(meta.size() - kB64.size()) != kB64)
        bad_request(f + ": only base64 data URLs are accepted (data:<type>;base64,...)");
    r.mime = std::string(meta.substr(0, meta.size() - kB64.size()));
    static const char* kTypes[] = {"image/png",          "image/jpeg",       "image/jpg",
                                   "application/dicom",  "application/x-nifti", "application/gzip",
                                   "application/octet-stream"};
    bool known = false;
    for (const char* t : kTypes) known |= r.mime == t;
    if (!known)
        bad_request(f + ": unsupported media type '" + r.mime.substr(0, 64) +
                    "' (image/png, image/jpeg, application/dicom, application/x-nifti, application/gzip)");
    r.bytes = decode_base64(url.substr(comma + 1), f);
    return r;
}

ChatRequest parse_chat_request(std::string_view body, const ParseLimits& limits) {
    const json j = parse_object(body);
    ChatRequest r;
    const json* msgs = member(j, "messages");
    if (!msgs) bad_request("messages: required");
    if (!msgs->is_array()) bad_request(std::string("messages: expected an array, got ") + type_name(*msgs));
    if (msgs->size() > limits.max_messages)
        bad_request("messages: at most " + std::to_string(limits.max_messages) + " messages");
    size_t n_images = 0;
    for (size_t i = 0; i < msgs->size(); ++i) {
        const json& m = (*msgs)[i];
        const std::string f = "messages[" + std::to_string(i) + "]";
        if (!m.is_object()) bad_request(f + ": expected an object, got " + type_name(m));
        const json* role = member(m, "role");
        if (!role) bad_request(f + ".role: required");
        ChatMessage cm;
        cm.role = get_string(*role, f + ".role");
        if (cm.role != "user" && cm.role != "assistant" && cm.role != "system")
            bad_request(f + ".role: expected user, assistant or system");
        const json* content = member(m, "content");
        if (!content) bad_request(f + ".content: required");
        if (content->is_string()) {
            cm.text = content->get<std::string>();
        } else if (content->is_array()) {
            for (size_t k = 0; k < content->size(); ++k) {
                const json& part = (*content)[k];
                const std::string pf = f + ".content[" + std::to_string(k) + "]";
                if (!part.is_object()) bad_request(pf + ": expected an object, got " + type_name(part));
                const json* type = member(part, "type");
                if (!type) bad_request(pf + ".type: required");
                const std::string t = get_string(*type, pf + ".type");
                if (t == "text") {
                    const json* text = member(part, "text");
                    if (!text) bad_request(pf + ".text: required");
                    if (!cm.text.empty()) cm.text += "\n";
                    cm.text += get_string(*text, pf + ".text");
                } else if (t == "image_url") {
                    if (cm.role != "user") bad_request(pf + ": images are accepted in user messages only");
                    const json* iu = member(part, "image_url");
                    if (!iu) bad_request(pf + ".image_url: required");
                    std::string url;
                    if (iu->is_string()) url = iu->get<std::string>();  // some clients send the URL itself
                    else if (iu->is_object() && member(*iu, "url")) url = get_string((*iu)["url"], pf + ".image_url.url");
                    else bad_request(pf + ".image_url: expected {\"url\": ...}");
                    if (++n_images > limits.max_images)
                        bad_request("messages: at most " + std::to_string(limits.max_images) + " images per request");
                    cm.images.push_back(parse_image_url(url, pf + ".image_url.url"));
                } else {
                    bad_request(pf + ".type: expected text or image_url");
                }
            }
        } else {
            bad_request(f + ".content: expected a string or an array of parts, got " + type_name(*content));
        }
        if (cm.role == "system") continue;  // the chat template carries the model's own system prompt
        if (cm.text.find_first_not_of(" \t\r\n") == std::string::npos && cm.role == "user" && cm.images.empty())
            bad_request(f + ".content: empty");
        r.messages.push_back(std::move(cm));
    }
    if (r.messages.empty()) bad_request("messages: at least one user message is required");
    for (size_t i = 0; i < r.messages.size(); ++i) {
        const char* want = i % 2 == 0 ? "user" : "assistant";
        if (r.messages[i].role != want)
            bad_request("messages: user and assistant messages must alternate, starting with user (message " +
                        std::to_string(i) + " is " + r.messages[i].role + ")");
    }
    if (r.messages.back().role != "user") bad_request("messages: the last message must be the user's question");

    if (const json* v = member(j, "stream")) r.stream = get_bool(*v, "stream");
    if (const json* v = member(j, "stream_options")) {
        if (!v->is_object()) bad_request("stream_options: expected an object");
        if (const json* u = member(*v, "include_usage")) r.include_usage = get_bool(*u, "stream_options.include_usage");
    }
    if (const json* v = member(j, "max_completion_tokens")) r.max_tokens = get_int(*v, "max_completion_tokens", 1, limits.max_tokens);
    if (const json* v = member(j, "max_tokens")) r.max_tokens = get_int(*v, "max_tokens", 1, limits.max_tokens);
    if (const json* v = member(j, "temperature")) r.temperature = float(get_number(*v, "temperature", 0, 2));
    if (const json* v = member(j, "top_p")) {
        r.top_p = get_number(*v, "top_p", 0, 1);
        if (r.top_p <= 0) bad_request("top_p: must be greater than 0");
    }
    if (const json* v = member(j, "seed")) r.seed = uint64_t(get_int(*v, "seed", 0, INT64_MAX));
    if (const json* v = member(j, "n")) {
        if (get_int(*v, "n", 1, 1) != 1) bad_request("n: only 1 is supported");
    }
    if (const json* v = member(j, "stop")) {
        if (v->is_string()) r.stop.push_back(v->get<std::string>());
        else if (v->is_array()) {
            for (size_t i = 0; i < v->size(); ++i) r.stop.push_back(get_string((*v)[i], "stop[" + std::to_string(i) + "]"));
        } else bad_request(std::string("stop: expected a string or an array of strings, got ") + type_name(*v));
        if (r.stop.size() > limits.max_stop) bad_request("stop: at most " + std::to_string(limits.max_stop) + " strings");
        for (const auto& s : r.stop)
            if (s.empty()) bad_request("stop: strings must not be empty");
    }
    if (const json* v = member(j, "plugin")) {
        r.plugin = get_string(*v, "plugin");
        if (r.plugin.empty() || r.plugin.size() > 200) bad_request("plugin: expected a plugin name");
    }
    if (const json* v = member(j, "consultation_id")) r.consultation_id = get_int(*v, "consultation_id", 1, INT64_MAX);
    if (const json* v = member(j, "window")) r.window = get_string(*v, "window");
    if (const json* v = member(j, "slice")) r.slice = int(get_int(*v, "slice", 0, 1 << 20));
    return r;
}

FeedbackRequest parse_feedback_request(std::string_view body) {
    const json j = parse_object(body);
    FeedbackRequest r;
    const json* a = member(j, "answer_id");
    if (!a) bad_request("answer_id: required");
    r.answer_id = get_int(*a, "answer_id", 1, INT64_MAX);
    if (const json* v = member(j, "rating")) r.rating = int(get_int(*v, "rating", 1, 5));
    if (const json* v = member(j, "correction")) r.correction = get_string(*v, "correction");
    if (const json* v = member(j, "comment")) r.comment = get_string(*v, "comment");
    if (!r.rating && !r.correction && !r.comment) bad_request("feedback: give at least one of rating, correction, comment");
    return r;
}

ImageGenerationRequest parse_image_generation_request(std::string_view body) {
    const json j = parse_object(body);
    ImageGenerationRequest r;
    const json* t = member(j, "task");
    if (!t) bad_request("task: required (ct2mri, mri2ct, sr or recon)");
    r.task = get_string(*t, "task");
    if (r.task != "ct2mri" && r.task != "mri2ct" && r.task != "sr" && r.task != "recon")
        bad_request("task: expected ct2mri, mri2ct, sr or recon");
    const json* u = member(j, "upload_id");
    if (!u) bad_request("upload_id: required (the input image, from POST /v1/uploads)");
    r.upload_id = get_int(*u, "upload_id", 1, INT64_MAX);
    if (const json* v = member(j, "stream")) r.stream = get_bool(*v, "stream");
    if (const json* v = member(j, "slice")) r.slice = int(get_int(*v, "slice", 0, 1 << 20));
    if (const json* v = member(j, "window")) r.window = get_string(*v, "window");
    if (const json* v = member(j, "plugin")) {
        r.plugin = get_string(*v, "plugin");
        if (r.plugin.empty() || r.plugin.size() > 200) bad_request("plugin: expected a plugin name");
    }
    if (const json* v = member(j, "seed")) r.seed = uint64_t(get_int(*v, "seed", 0, INT64_MAX));
    if (const json* v = member(j, "prompt")) {
        r.prompt = get_string(*v, "prompt");
        if (r.prompt.size() > 4096) bad_request("prompt: at most 4096 bytes");
    }
    if (const json* v = member(j, "n")) get_int(*v, "n", 1, 1);
    if (const json* v = member(j, "response_format")) {
        if (get_string(*v, "response_format") != "b64_json")
            bad_request("response_format: only b64_json is supported (nothing is served by URL)");
    }
    return r;
}

void check_upload_name(std::string_view name) {
    if (name.empty()) bad_request("filename: must not be empty");
    if (name.size() > 255) bad_request("filename: at most 255 bytes");
    if (name == "." || name == ".." || name.find("..") != std::string_view::npos)
        bad_request("filename: must be a plain file name ('..' is not allowed)");
    for (unsigned char c : name) {
        if (c == '/' || c == '\\') bad_request("filename: must be a plain file name, not a path");
        if (c < 0x20 || c == 0x7f) bad_request("filename: control characters are not allowed");
    }
}

}  // namespace hg::server
