import Foundation
import Testing
import Tokenization

/// Checks every vector of Fixtures/tokenizers/vectors (made by scripts/make_tokenizer_vectors.py
/// with HF `tokenizers`).
@Suite struct VectorTests {
    @Test(arguments: TestSupport.vectorNames)
    func encode(name: String) throws {
        let v = try TestSupport.vectors(name)
        let tok = try TestSupport.tokenizer(v.tokenizer_dir)
        #expect(v.cases.count >= 40)
        for c in v.cases {
            let withSpecial = tok.encode(c.text, addSpecialTokens: true)
            #expect(withSpecial == c.ids_with_special, "\(name) encode(add_special_tokens=True) of \"\(escaped(c.text))\"")
            let plain = tok.encode(c.text, addSpecialTokens: false)
            #expect(plain == c.ids, "\(name) encode(add_special_tokens=False) of \"\(escaped(c.text))\"")
        }
    }

    @Test(arguments: TestSupport.vectorNames)
    func decode(name: String) throws {
        let v = try TestSupport.vectors(name)
        let tok = try TestSupport.tokenizer(v.tokenizer_dir)
        for c in v.cases {
            let d = tok.decode(c.ids_with_special, skipSpecialTokens: true)
            #expect(same(d, c.decoded), "\(name) decode(skip) of \"\(escaped(c.text))\": got \"\(escaped(d))\", want \"\(escaped(c.decoded))\"")
            let ds = tok.decode(c.ids_with_special, skipSpecialTokens: false)
            #expect(same(ds, c.decoded_with_special), "\(name) decode(no skip) of \"\(escaped(c.text))\": got \"\(escaped(ds))\", want \"\(escaped(c.decoded_with_special))\"")
        }
        #expect(!v.decode_cases.isEmpty)
        for c in v.decode_cases {
            let d = tok.decode(c.ids, skipSpecialTokens: c.skip_special_tokens)
            #expect(same(d, c.decoded), "\(name) decode(\(c.ids), skip: \(c.skip_special_tokens)): got \"\(escaped(d))\", want \"\(escaped(c.decoded))\"")
        }
    }

    @Test(arguments: TestSupport.vectorNames)
    func incrementalDecoder(name: String) throws {
        let v = try TestSupport.vectors(name)
        let tok = try TestSupport.tokenizer(v.tokenizer_dir)
        for skip in [true, false] {
            for c in v.cases {
                var dec = IncrementalDecoder(tokenizer: tok, skipSpecialTokens: skip)
                var pieces: [String] = []
                for id in c.ids_with_special { pieces.append(dec.push(id)) }
                pieces.append(dec.flush())
                let joined = pieces.joined()
                let want = skip ? c.decoded : c.decoded_with_special
                #expect(same(joined, want), "\(name) incremental (skip: \(skip)) of \"\(escaped(c.text))\": got \"\(escaped(joined))\" from \(pieces.map(escaped))")
                if !want.unicodeScalars.contains("\u{FFFD}") {
                    #expect(!pieces.contains { $0.unicodeScalars.contains("\u{FFFD}") }, "\(name): a piece holds U+FFFD for \"\(escaped(c.text))\"")
                }
            }
        }
    }

    /// The reference_encodings.json committed with the two sentencepiece tokenizers:
    /// we match HF tokenizers, i.e. `tokenizer_json_ids` where present.
    @Test(arguments: [("Fixtures/stories260k", 1), ("Fixtures/tokenizer-mistral-v1", 1)])
    func referenceEncodings(dir: String, bos: Int) throws {
        struct Ref: Decodable {
            struct Case: Decodable {
                let text: String
                let ids: [Int]
                let tokenizer_json_ids: [Int]?
            }
            let cases: [Case]
        }
        let data = try Data(contentsOf: TestSupport.url(dir + "/reference_encodings.json"))
        let ref = try JSONDecoder().decode(Ref.self, from: data)
        let tok = try TestSupport.tokenizer(dir)
        #expect(!ref.cases.isEmpty)
        for c in ref.cases {
            let want = c.tokenizer_json_ids ?? c.ids
            #expect(tok.encode(c.text, addSpecialTokens: false) == want, "\(dir): \"\(escaped(c.text))\"")
            #expect(tok.encode(c.text) == [bos] + want, "\(dir) with BOS: \"\(escaped(c.text))\"")
        }
    }
}
