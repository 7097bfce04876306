import Foundation
import Testing

@testable import ServeBench

@Suite struct StreamParserTests {
    func feed(_ s: inout SSELineSplitter, _ text: String) -> [String] {
        Array(text.utf8).withUnsafeBytes { s.feed($0) }.map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func splitsDataLinesWhateverTheChunking() {
        let stream = "data: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\n: comment\nevent: x\ndata: [DONE]\n\n"
        var whole = SSELineSplitter()
        #expect(feed(&whole, stream) == ["{\"a\":1}", "{\"b\":2}", "[DONE]"])
        var bytewise = SSELineSplitter()
        var got: [String] = []
        for ch in stream { got += feed(&bytewise, String(ch)) }
        #expect(got == ["{\"a\":1}", "{\"b\":2}", "[DONE]"])
        var unterminated = SSELineSplitter()
        #expect(feed(&unterminated, "data: [DONE]").isEmpty)
        #expect(unterminated.finish().map { String(decoding: $0, as: UTF8.self) } == ["[DONE]"])
    }

    @Test func scansKeysButNotTextThatLooksLikeThem() {
        let json = Array(#"{"text":"\"completion_tokens\": 99","meta_info":{"prompt_tokens" : 12,"completion_tokens":7}}"#.utf8)
        #expect(JSONScan.int("completion_tokens", in: json) == 7)
        #expect(JSONScan.int("prompt_tokens", in: json) == 12)
        #expect(JSONScan.hasNonEmptyString("text", in: json))
        #expect(!JSONScan.hasNonEmptyString("text", in: Array(#"{"text": ""}"#.utf8)))
        #expect(!JSONScan.hasNonEmptyString("content", in: Array(#"{"delta":{"content":null}}"#.utf8)))
        #expect(JSONScan.int("missing", in: json) == nil)
    }

    @Test func nativeChunksCountTokensFromMetaInfoDeltas() {
        let r = BenchRequest(index: 0, prompt: .ids([1, 2]), inputLength: 2, outputLength: 5, adapter: nil)
        var m = StreamMeasurement(request: r, start: 10, countsChunks: false)
        func chunk(_ n: Int) -> StreamChunk {
            StreamChunk(payload: Array(#"{"text":"x","output_ids":[],"meta_info":{"prompt_tokens":3,"completion_tokens":\#(n)}}"#.utf8), backend: .sglang)
        }
        var accepted = [m.take(chunk(1), at: 10.5), m.take(chunk(3), at: 10.7), m.take(chunk(3), at: 10.8), m.take(chunk(5), at: 11.1)]
        accepted.append(m.take(StreamChunk(payload: Array("[DONE]".utf8), backend: .sglang), at: 11.2))
        #expect(accepted.allSatisfy { $0 })
        let result = m.finish(at: 11.2)
        #expect(result.success && result.outputTokens == 5 && result.inputTokens == 3)
        #expect(result.ttft == 0.5)
        #expect(result.itl.count == 4)
        #expect(zip(result.itl, [0.1, 0.1, 0.2, 0.2]).allSatisfy { abs($0 - $1) < 1e-9 })
        #expect(abs(result.tpot! - 0.7 / 4) < 1e-9)
    }

    @Test func openAIChunksCountOneTokenEachAndTakeTheUsage() {
        let r = BenchRequest(index: 0, prompt: .text("hi"), inputLength: 1, outputLength: 3, adapter: "a")
        var m = StreamMeasurement(request: r, start: 0, countsChunks: true)
        let text = StreamChunk(payload: Array(#"{"choices":[{"index":0,"text":"a"}]}"#.utf8), backend: .openai)
        let empty = StreamChunk(payload: Array(#"{"choices":[{"index":0,"text":""}]}"#.utf8), backend: .openai)
        let usage = StreamChunk(payload: Array(#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#.utf8), backend: .openai)
        let accepted = [m.take(text, at: 1), m.take(empty, at: 1.5), m.take(text, at: 2), m.take(text, at: 4), m.take(usage, at: 4.1)]
        #expect(accepted.allSatisfy { $0 })
        let result = m.finish(at: 4.2)
        #expect(result.ttft == 1 && result.itl == [1, 2])
        #expect(result.outputTokens == 4 && result.inputTokens == 9)
    }

    @Test func errorsInTheStreamFailTheRequest() {
        let chunk = StreamChunk(payload: Array(#"{"error":{"message":"adapter not loaded","code":400}}"#.utf8), backend: .sglang)
        #expect(chunk.error == "adapter not loaded")
        let r = BenchRequest(index: 4, prompt: .text("x"), inputLength: 1, outputLength: 1, adapter: nil)
        var m = StreamMeasurement(request: r, start: 0, countsChunks: false)
        let accepted = m.take(chunk, at: 1)
        #expect(!accepted)
        let result = m.fail(m.result.error!, status: 200, at: 1)
        #expect(!result.success && result.error!.contains("adapter not loaded"))
        #expect(SLO(ttftMs: 1e9, tpotMs: nil).isMet(by: result) == false)
    }

    @Test func requestBodiesAreSGLangs() throws {
        var c = BenchmarkConfig()
        c.extraRequestBody = #"{"sampling_params":{"top_p":0.9},"rid":"r"}"#
        let r = BenchRequest(index: 0, prompt: .ids([5, 6]), inputLength: 2, outputLength: 7, adapter: "pirate")
        let native = try JSONSerialization.jsonObject(with: Data(RequestBody.make(r, config: c, model: nil))) as! [String: Any]
        #expect(native["input_ids"] as? [Int] == [5, 6] && native["lora_path"] as? String == "pirate" && native["stream"] as? Bool == true)
        let sp = native["sampling_params"] as! [String: Any]
        #expect(sp["max_new_tokens"] as? Int == 7 && sp["ignore_eos"] as? Bool == true && sp["top_p"] as? Double == 0.9)
        #expect(native["rid"] as? String == "r")
        c.backend = .openaiChat
        c.extraRequestBody = nil
        var t = r
        t.prompt = .text("hello")
        let chat = try JSONSerialization.jsonObject(with: Data(RequestBody.make(t, config: c, model: "base"))) as! [String: Any]
        #expect(chat["model"] as? String == "base:pirate" && chat["max_tokens"] as? Int == 7)
        #expect((chat["messages"] as? [[String: Any]])?.first?["content"] as? String == "hello")
        c.openAIAdapterStyle = .field
        let field = try JSONSerialization.jsonObject(with: Data(RequestBody.make(t, config: c, model: "base"))) as! [String: Any]
        #expect(field["model"] as? String == "base" && field["lora_path"] as? String == "pirate")
    }
}
