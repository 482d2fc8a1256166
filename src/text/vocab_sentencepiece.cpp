// SentencePiece tokenizer.model: a protobuf ModelProto. A minimal wire-format reader that takes only
// the fields a BPE tokenizer needs and checks every length against the buffer.
//
//   ModelProto      1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
//   SentencePiece   1: piece (string)   2: score (float)   3: type (enum, default NORMAL)
//   TrainerSpec     3: model_type (UNIGRAM=1, BPE=2, WORD=3, CHAR=4)   24: treat_whitespace_as_suffix
//                   35: byte_fallback   40..43: unk_id, bos_id, eos_id, pad_id
//   NormalizerSpec  1: name   2: precompiled_charsmap   3: add_dummy_prefix   4: remove_extra_whitespaces
//                   5: escape_whitespaces
#include <cstring>
#include <unordered_map>

#include "core/error.h"
#include "text/unicode.h"
#include "text/vocab.h"

namespace hg::text {

namespace {

class ProtoReader {
public:
    ProtoReader(const uint8_t* p, size_t n, const std::string& source, const char* what)
        : p_(p), end_(p + n), source_(source), what_(what) {}

    bool done() const { return p_ >= end_; }

    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            HG_CHECK(p_ < end_, "%s: truncated varint in %s", source_.c_str(), what_);
            const uint8_t b = *p_++;
            v |= uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return v;
        }
        hg::fail("%s: varint longer than 10 bytes in %s", source_.c_str(), what_);
    }

    // Reads a field key; returns false at the end of the message.
    bool next(uint32_t& field, uint32_t& wire) {
        if (done()) return false;
        const uint64_t key = varint();
        field = static_cast<uint32_t>(key >> 3);
        wire = static_cast<uint32_t>(key & 7);
        HG_CHECK(field != 0, "%s: field number 0 in %s", source_.c_str(), what_);
        return true;
    }

    std::pair<const uint8_t*, size_t> bytes() {
        const uint64_t n = varint();
        HG_CHECK(n <= static_cast<uint64_t>(end_ - p_), "%s: length %llu runs past the end of %s", source_.c_str(),
                 static_cast<unsigned long long>(n), what_);
        const uint8_t* q = p_;
        p_ += n;
        return {q, static_cast<size_t>(n)};
    }

    float fixed32_float() {
        HG_CHECK(end_ - p_ >= 4, "%s: truncated float in %s", source_.c_str(), what_);
        float f;
        std::memcpy(&f, p_, 4);
        p_ += 4;
        return f;
    }

    void skip(uint32_t wire) {
        switch (wire) {
            case 0: varint(); break;
            case 1: HG_CHECK(end_ - p_ >= 8, "%s: truncated fixed64 in %s", source_.c_str(), what_); p_ += 8; break;
            case 2: bytes(); break;
            case 5: HG_CHECK(end_ - p_ >= 4, "%s: truncated fixed32 in %s", source_.c_str(), what_); p_ += 4; break;
            default: hg::fail("%s: unsupported protobuf wire type %u in %s", source_.c_str(), wire, what_);
        }
    }

    void expect(uint32_t wire, uint32_t want, uint32_t field) {
        HG_CHECK(wire == want, "%s: field %u of %s has wire type %u, expected %u", source_.c_str(), field, what_, wire,
                 want);
    }

private:
    const uint8_t* p_;
    const uint8_t* end_;
    const std::string& source_;
    const char* what_;
};

int32_t as_int32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }  // protobuf int32 is sign-extended

}  // namespace

Vocab load_sentencepiece_model(std::span<const uint8_t> data, const std::string& source) {
    Vocab v;
    v.source = source;
    v.kind = VocabKind::spm_bpe;
    int model_type = 1;  // UNIGRAM is the protobuf default
    bool suffix = false;
    int32_t unk = 0, bos = 1, eos = 2, pad = -1;
    std::string normalizer_name;
    size_t charsmap_size = 0;
    bool saw_normalizer = false;

    ProtoReader r(data.data(), data.size(), source, "ModelProto");
    uint32_t field, wire;
    while (r.next(field, wire)) {
        if (field == 1) {  // SentencePiece
            r.expect(wire, 2, field);
            auto [p, n] = r.bytes();
            ProtoReader pr(p, n, source, "SentencePiece");
            std::string piece;
            float score = 0;
            int type = 1;
            uint32_t f2, w2;
            while (pr.next(f2, w2)) {
                if (f2 == 1) {
                    pr.expect(w2, 2, f2);
                    auto [q, m] = pr.bytes();
                    piece.assign(reinterpret_cast<const char*>(q), m);
                } else if (f2 == 2) {
                    pr.expect(w2, 5, f2);
                    score = pr.fixed32_float();
                } else if (f2 == 3) {
                    pr.expect(w2, 0, f2);
                    type = static_cast<int>(pr.varint());
                } else {
                    pr.skip(w2);
                }
            }
            HG_CHECK(type >= 1 && type <= 6, "%s: piece %zu has unknown type %d", source.c_str(), v.tokens.size(), type);
            HG_CHECK(utf8_invalid_at(piece) == std::string::npos, "%s: piece %zu is not valid UTF-8", source.c_str(),
                     v.tokens.size());
            HG_CHECK(v.tokens.size() < (1u << 30), "%s: too many pieces", source.c_str());
            v.tokens.push_back(std::move(piece));
            v.scores.push_back(score);
            v.types.push_back(static_cast<TokenType>(type));
        } else if (field == 2) {  // TrainerSpec
            r.expect(wire, 2, field);
            auto [p, n] = r.bytes();
            ProtoReader tr(p, n, source, "TrainerSpec");
            uint32_t f2, w2;
            while (tr.next(f2, w2)) {
                if (w2 != 0) { tr.skip(w2); continue; }
                const uint64_t x = tr.varint();
                switch (f2) {
                    case 3: model_type = static_cast<int>(x); break;
                    case 24: suffix = x != 0; break;
                    case 35: v.byte_fallback = x != 0; break;
                    case 40: unk = as_int32(x); break;
                    case 41: bos = as_int32(x); break;
                    case 42: eos = as_int32(x); break;
                    case 43: pad = as_int32(x); break;
                    default: break;
                }
            }
        } else if (field == 3) {  // NormalizerSpec
            r.expect(wire, 2, field);
            saw_normalizer = true;
            auto [p, n] = r.bytes();
            ProtoReader nr(p, n, source, "NormalizerSpec");
            uint32_t f2, w2;
            while (nr.next(f2, w2)) {
                if (f2 == 1 && w2 == 2) {
                    auto [q, m] = nr.bytes();
                    normalizer_name.assign(reinterpret_cast<const char*>(q), m);
                } else if (f2 == 2 && w2 == 2) {
                    charsmap_size = nr.bytes().second;
                } else if (f2 >= 3 && f2 <= 5 && w2 == 0) {
                    const bool b = nr.varint() != 0;
                    if (f2 == 3) v.add_dummy_prefix = b;
                    if (f2 == 4) v.remove_extra_whitespaces = b;
                    if (f2 == 5) v.escape_whitespaces = b;
                } else {
                    nr.skip(w2);
                }
            }
        } else {
            r.skip(wire);
        }
    }
    if (!saw_normalizer) v.remove_extra_whitespaces = true;  // protobuf defaults when the message is absent

    HG_CHECK(!v.tokens.empty(), "%s: no pieces (not a SentencePiece model?)", source.c_str());
    HG_CHECK(model_type == 2, "%s: SentencePiece model type %d is not supported (only BPE, type 2)", source.c_str(),
             model_type);
    HG_CHECK(!suffix, "%s: treat_whitespace_as_suffix models are not supported", source.c_str());
    HG_CHECK(charsmap_size == 0 && (normalizer_name.empty() || normalizer_name == "identity"),
             "%s: normalizer '%s' with a precompiled character map is not supported (only 'identity')",
             source.c_str(), normalizer_name.c_str());

    std::unordered_map<std::string, int32_t> seen;
    const int32_t n = v.size();
    for (int32_t i = 0; i < n; ++i) {
        HG_CHECK(seen.emplace(v.tokens[i], i).second, "%s: piece '%s' appears twice (ids %d and %d)", source.c_str(),
                 v.tokens[i].c_str(), seen[v.tokens[i]], i);
        if (v.types[i] == TokenType::byte) {
            const std::string& p = v.tokens[i];
            HG_CHECK(p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>', "%s: byte piece %d is '%s', not <0xNN>",
                     source.c_str(), i, p.c_str());
        }
        if (v.types[i] == TokenType::unknown) v.unk_id = i;
    }
    auto id_or_none = [&](int32_t id) { return id >= 0 && id < n ? id : -1; };
    if (id_or_none(unk) >= 0) v.unk_id = unk;
    v.bos_id = id_or_none(bos);
    v.eos_id = id_or_none(eos);
    v.pad_id = id_or_none(pad);
    v.space_mode = v.add_dummy_prefix ? SpaceMode::prepend_each : SpaceMode::metaspace_never;
    v.slow_class = "LlamaTokenizer";
    v.model_size = n;
    v.add_bos = v.fast_add_bos = v.bos_id >= 0;  // LlamaTokenizer's default add_bos_token=True
    v.validate();
    return v;
}

}  // namespace hg::text
