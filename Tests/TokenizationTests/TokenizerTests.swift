import Foundation
import Testing
import Tokenization

@Suite struct TokenizerTests {
    @Test func specialTokenIds() throws {
        let stories = try TestSupport.tokenizer("Fixtures/stories260k")
        #expect(stories.vocabSize == 512)
        #expect(stories.bosTokenId == 1 && stories.eosTokenId == 2 && stories.padTokenId == nil)
        #expect(stories.isSpecial(0) && stories.isSpecial(1) && stories.isSpecial(2) && !stories.isSpecial(3))
        #expect(stories.token(for: 1) == "<s>" && stories.tokenId(for: "</s>") == 2)
        #expect(stories.tokenId(for: "<0x41>") == 68 && stories.token(for: 68) == "<0x41>")
        #expect(stories.token(for: 99_999) == nil && stories.tokenId(for: "no such token") == nil)

        // A path to the tokenizer.json file itself works too (configs are read next to it).
        let byFile = try Tokenizer(directory: TestSupport.url("Fixtures/stories260k/tokenizer.json"))
        #expect(byFile.bosTokenId == 1 && byFile.encode("Hello world") == stories.encode("Hello world"))

        let mistral = try TestSupport.tokenizer("Fixtures/tokenizer-mistral-v1")
        #expect(mistral.vocabSize == 32000 && mistral.bosTokenId == 1 && mistral.eosTokenId == 2)

        let gpt2 = try TestSupport.tokenizer("Fixtures/tokenizers/gpt2-bytelevel")
        let eot = try #require(gpt2.tokenId(for: "<|endoftext|>"))
        #expect(gpt2.bosTokenId == eot && gpt2.eosTokenId == eot && gpt2.vocabSize == 1002)
        #expect(gpt2.encode("hi", addSpecialTokens: true) == gpt2.encode("hi", addSpecialTokens: false))

        let llama3 = try TestSupport.tokenizer("Fixtures/tokenizers/llama3-bytelevel")
        let bot = try #require(llama3.tokenId(for: "<|begin_of_text|>"))
        #expect(llama3.bosTokenId == bot && llama3.eosTokenId == llama3.tokenId(for: "<|eot_id|>"))
        #expect(llama3.encode("hi").first == bot)
        let toolCall = try #require(llama3.tokenId(for: "<tool_call>"))
        #expect(!llama3.isSpecial(toolCall) && llama3.isSpecial(bot))

        let qwen2 = try TestSupport.tokenizer("Fixtures/tokenizers/qwen2-bytelevel")
        #expect(qwen2.bosTokenId == nil)
        #expect(qwen2.eosTokenId == qwen2.tokenId(for: "<|im_end|>"))
        #expect(qwen2.padTokenId == qwen2.tokenId(for: "<|endoftext|>"))
    }

    /// add_bos_token / add_eos_token in tokenizer_config.json adjust the post-processor's template;
    /// token names may be strings or {"content": ...} objects.
    @Test func configFlags() throws {
        let json = try Data(contentsOf: TestSupport.url("Fixtures/stories260k/tokenizer.json"))
        let plain = try Tokenizer(tokenizerJSON: json, config: nil)
        let hello = plain.encode("Hello", addSpecialTokens: false)
        #expect(plain.encode("Hello") == [1] + hello)  // TemplateProcessing adds <s>

        let both = try Tokenizer(tokenizerJSON: json, config: Data("""
            {"add_bos_token": true, "add_eos_token": true,
             "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": {"content": "</s>"}, "pad_token": "<unk>"}
            """.utf8))
        #expect(both.encode("Hello") == [1] + hello + [2])
        #expect(both.encode("Hello", addSpecialTokens: false) == hello)
        #expect(both.padTokenId == 0)

        let none = try Tokenizer(tokenizerJSON: json, config: Data("""
            {"add_bos_token": false, "bos_token": "<s>", "eos_token": "</s>"}
            """.utf8))
        #expect(none.encode("Hello") == hello)

        let nullBos = try Tokenizer(tokenizerJSON: json, config: Data("{\"bos_token\": null}".utf8))
        #expect(nullBos.bosTokenId == nil)
    }

    @Test func incrementalDecoderWithPrompt() throws {
        for dir in ["Fixtures/tokenizer-mistral-v1", "Fixtures/stories260k", "Fixtures/tokenizers/llama3-bytelevel"] {
            let tok = try TestSupport.tokenizer(dir)
            let prompt = tok.encode("Question: what is 中文? Answer:")
            let generated = tok.encode(" It means Chinese 😀, right?\nYes.", addSpecialTokens: false)
                + [tok.eosTokenId ?? 2]
            var dec = IncrementalDecoder(tokenizer: tok, promptIds: prompt)
            var text = ""
            for id in generated { text += dec.push(id) }
            text += dec.flush()
            let full = tok.decode(prompt + generated)
            let promptText = tok.decode(prompt)
            #expect(same(promptText + text, full), "\(dir): \(escaped(text))")
            #expect(text.hasPrefix(" It"), "\(dir): the leading space after a prompt is kept: \(escaped(text))")
        }
    }

    /// Pieces never end in half a character: byte-fallback tokens of one character come out together.
    @Test func incrementalDecoderHoldsPartialCharacters() throws {
        let tok = try TestSupport.tokenizer("Fixtures/stories260k")
        let ids = tok.encode("中", addSpecialTokens: false)  // ▁ + three byte tokens
        #expect(ids.count == 4)
        var dec = IncrementalDecoder(tokenizer: tok)
        let pieces = ids.map { dec.push($0) }
        #expect(pieces == ["", "", "", "中"])
        #expect(dec.flush() == "")

        // An incomplete character at the end comes out of flush() as decode() renders it.
        var dec2 = IncrementalDecoder(tokenizer: tok)
        let partial = Array(ids.prefix(3))
        #expect(partial.map { dec2.push($0) }.joined() == "")
        let rest = dec2.flush()
        #expect(same(rest, tok.decode(partial)) && rest == "\u{FFFD}\u{FFFD}")

        let gpt2 = try TestSupport.tokenizer("Fixtures/tokenizers/gpt2-bytelevel")
        var dec3 = IncrementalDecoder(tokenizer: gpt2)
        var out: [String] = []
        for id in gpt2.encode("a😀b", addSpecialTokens: false) { out.append(dec3.push(id)) }
        #expect(!out.contains { $0.unicodeScalars.contains("\u{FFFD}") })
        #expect(out.joined() + dec3.flush() == "a😀b")
    }

    @Test func encodingSpeed() throws {
        var words: [String] = []
        let vocabulary = ["Once", "upon", "a", "time,", "there", "was", "little", "girl", "named", "Lily.",
                          "She", "loved", "playing", "outside", "in", "the", "sunny", "park", "with", "friends!",
                          "12345", "café", "naïve", "中文", "😀", "don't", "they're", "(nested)", "\n", "x**2"]
        for i in 0..<2000 { words.append(vocabulary[(i * 7 + i / 3) % vocabulary.count]) }
        let text = words.joined(separator: " ")
        for dir in ["Fixtures/tokenizer-mistral-v1", "Fixtures/tokenizers/llama3-bytelevel",
                    "Fixtures/tokenizers/gpt2-bytelevel", "Fixtures/stories260k"] {
            let tok = try TestSupport.tokenizer(dir)
            let start = Date()
            let ids = tok.encode(text)
            let seconds = Date().timeIntervalSince(start)
            #expect(seconds < 1.0, "\(dir): \(seconds) s for 2,000 words")
            #expect(same(tok.decode(ids), text) || dir.contains("stories"), "\(dir) round trip")
        }
    }

    @Test func concurrentUse() throws {
        let tok = try TestSupport.tokenizer("Fixtures/tokenizers/llama3-bytelevel")
        let texts = (0..<16).map { "Request \($0): Hello, world! It's 中文 and 😀 number \($0 * 12345)." }
        let expected = texts.map { tok.encode($0) }
        let results = ResultBox(count: texts.count)
        DispatchQueue.concurrentPerform(iterations: texts.count) { i in
            results.set(i, tok.encode(texts[i]))
        }
        #expect(results.values == expected)
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [[Int]]
    init(count: Int) { values = Array(repeating: [], count: count) }
    func set(_ i: Int, _ v: [Int]) {
        lock.lock()
        values[i] = v
        lock.unlock()
    }
}
