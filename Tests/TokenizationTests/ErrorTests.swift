import Foundation
import Testing
import Tokenization

@Suite struct ErrorTests {
    private func tempDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    private func loadError(_ body: () throws -> Tokenizer) -> TokenizerError? {
        do {
            _ = try body()
            return nil
        } catch let e as TokenizerError {
            return e
        } catch {
            Issue.record("unexpected error type: \(error)")
            return nil
        }
    }

    @Test func missingTokenizerJSON() throws {
        let dir = try tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let e = loadError { try Tokenizer(directory: dir) }
        #expect(e != nil)
        #expect(e?.file.hasSuffix("tokenizer.json") == true)
        #expect(e?.description.contains("not found") == true)
    }

    @Test func malformedJSON() throws {
        let dir = try tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,}".utf8)
            .write(to: dir.appendingPathComponent("tokenizer.json"))
        let e = loadError { try Tokenizer(directory: dir) }
        #expect(e?.file.hasSuffix("tokenizer.json") == true)
        #expect(e?.message.contains("malformed JSON") == true)

        for bad in ["", "[1, 2]", "{\"model\": 3}", "{\"a\": tru}", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}}}"] {
            let err = loadError { try Tokenizer(tokenizerJSON: Data(bad.utf8), config: nil) }
            #expect(err != nil, "\(bad)")
            #expect(err?.description.hasPrefix("tokenizer.json: ") == true, "\(String(describing: err))")
        }
    }

    @Test func malformedConfig() throws {
        let json = try Data(contentsOf: TestSupport.url("Fixtures/stories260k/tokenizer.json"))
        let e = loadError { try Tokenizer(tokenizerJSON: json, config: Data("{nope".utf8)) }
        #expect(e?.file == "tokenizer_config.json")
    }

    @Test(arguments: ["Unigram", "WordPiece", "WordLevel"])
    func unsupportedModelType(type: String) throws {
        let json = """
            {"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
             "post_processor": null, "decoder": null,
             "model": {"type": "\(type)", "vocab": [["<unk>", 0.0], ["a", -1.0]], "unk_id": 0}}
            """
        let e = loadError { try Tokenizer(tokenizerJSON: Data(json.utf8), config: nil) }
        #expect(e?.file == "tokenizer.json")
        #expect(e?.message.contains("unsupported model type \"\(type)\"") == true, "\(String(describing: e))")
    }

    @Test func unsupportedPipelineParts() throws {
        let base = """
            {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}, %@}
            """
        for (part, word) in [
            ("\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"\"}", "normalizer"),
            ("\"pre_tokenizer\": {\"type\": \"UnicodeScripts\"}", "pre_tokenizer"),
            ("\"decoder\": {\"type\": \"CTC\"}", "decoder"),
        ] {
            let json = base.replacingOccurrences(of: "%@", with: part)
            let e = loadError { try Tokenizer(tokenizerJSON: Data(json.utf8), config: nil) }
            #expect(e?.message.contains("unsupported \(word)") == true, "\(String(describing: e))")
        }
        let badMerge = """
            {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}
            """
        let e = loadError { try Tokenizer(tokenizerJSON: Data(badMerge.utf8), config: nil) }
        #expect(e?.message.contains("not in the vocabulary") == true)
    }

    @Test func minimalTokenizer() throws {
        // Merges in both layouts; no normalizer, pre-tokenizer, decoder or post-processor.
        for merges in ["[\"a b\", \"ab c\"]", "[[\"a\", \"b\"], [\"ab\", \"c\"]]"] {
            let json = """
                {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, "merges": \(merges)}}
                """
            let tok = try Tokenizer(tokenizerJSON: Data(json.utf8), config: nil)
            #expect(tok.encode("abcab") == [4, 3])
            #expect(tok.encode("abx") == [3])  // no unk token: unknown characters vanish
            #expect(tok.decode([4, 3]) == "abc ab")  // no decoder: tokens joined with spaces
            #expect(tok.vocabSize == 5)
            #expect(tok.bosTokenId == nil && tok.eosTokenId == nil && tok.padTokenId == nil)
        }
    }
}
