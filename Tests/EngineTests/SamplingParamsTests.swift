import Foundation
import LoomCore
import Testing
@testable import Engine

private func decode(_ json: String) throws -> SamplingParams {
    try JSONDecoder().decode(SamplingParams.self, from: Data(json.utf8))
}

private func message(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let error as LoomError {
        guard case .invalidArgument(let text) = error else { return "unexpected \(error)" }
        return text
    } catch {
        return "unexpected \(error)"
    }
}

@Test func defaultsMatchSGLang() throws {
    let p = try decode("{}")
    #expect(p == SamplingParams())
    #expect(p.maxNewTokens == 128 && p.temperature == 1 && p.topP == 1 && p.topK == -1 && p.minP == 0)
    #expect(p.frequencyPenalty == 0 && p.presencePenalty == 0 && p.repetitionPenalty == 1 && p.minNewTokens == 0)
    #expect(p.stop.isEmpty && p.stopTokenIds.isEmpty && !p.ignoreEos && p.skipSpecialTokens && p.spacesBetweenSpecialTokens)
    #expect(p.n == 1 && p.samplingSeed == nil && !p.noStopTrim)
}

@Test func decodesEveryFieldAndIgnoresUnknownKeys() throws {
    let p = try decode("""
        {"max_new_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
         "frequency_penalty": 0.1, "presence_penalty": -0.2, "repetition_penalty": 1.3, "min_new_tokens": 2,
         "stop": ["a", "b"], "stop_token_ids": [5, 6], "ignore_eos": true, "skip_special_tokens": false,
         "spaces_between_special_tokens": false, "n": 3, "sampling_seed": -42, "no_stop_trim": true,
         "regex": null, "json_schema": "{}", "custom_params": {"x": 1}, "logit_bias": {"1": 2.0}}
        """)
    #expect(p.maxNewTokens == 7 && p.temperature == 0.5 && p.topP == 0.9 && p.topK == 40 && p.minP == 0.05)
    #expect(p.frequencyPenalty == 0.1 && p.presencePenalty == -0.2 && p.repetitionPenalty == 1.3 && p.minNewTokens == 2)
    #expect(p.stop == ["a", "b"] && p.stopTokenIds == [5, 6] && p.ignoreEos && !p.skipSpecialTokens)
    #expect(!p.spacesBetweenSpecialTokens && p.n == 3 && p.samplingSeed == -42 && p.noStopTrim)
    let back = try JSONDecoder().decode(SamplingParams.self, from: JSONEncoder().encode(p))
    #expect(back == p)
}

@Test func stopAcceptsAStringAndNullMeansDefault() throws {
    #expect(try decode(#"{"stop": "\n"}"#).stop == ["\n"])
    let p = try decode(#"{"temperature": null, "top_k": null, "stop": null, "stop_token_ids": null, "n": null}"#)
    #expect(p.temperature == 1 && p.topK == -1 && p.stop.isEmpty && p.stopTokenIds.isEmpty && p.n == 1)
    #expect(p.maxNewTokens == 128)
    // SGLang: an explicit null max_new_tokens means "as many as the context allows".
    #expect(try decode(#"{"max_new_tokens": null}"#).maxNewTokens == nil)
}

@Test func wrongTypesNameTheField() {
    #expect(message { _ = try decode(#"{"temperature": "hot"}"#) } == "sampling_params.temperature must be a number, got a string.")
    #expect(message { _ = try decode(#"{"max_new_tokens": 1.5}"#) } == "sampling_params.max_new_tokens must be an integer, got the number 1.5.")
    #expect(message { _ = try decode(#"{"ignore_eos": 1}"#) } == "sampling_params.ignore_eos must be a boolean, got the number 1.")
    #expect(message { _ = try decode(#"{"stop": 3}"#) } == "sampling_params.stop must be a string or a list of strings, got the number 3.")
    #expect(message { _ = try decode(#"{"stop_token_ids": ["x"]}"#) } == "sampling_params.stop_token_ids must be a list of integers, got a list.")
    #expect(message { _ = try decode(#"{"n": {"a": 1}}"#) } == "sampling_params.n must be an integer, got an object.")
    #expect(message { _ = try decode(#"{"top_p": [1]}"#) } == "sampling_params.top_p must be a number, got a list.")
}

@Test func validationMessages() {
    func check(_ change: (inout SamplingParams) -> Void, prompt: Int = 0) -> String? {
        var p = SamplingParams()
        change(&p)
        return message { try p.validate(vocabSize: 100, maxContext: 1000, promptTokenCount: prompt) }
    }
    #expect(check { _ in } == nil)
    #expect(check { $0.temperature = 0 } == nil)
    #expect(check { $0.temperature = -0.5 } == "temperature must be a non-negative finite number, got -0.5.")
    #expect(check { $0.temperature = .nan } == "temperature must be a non-negative finite number, got nan.")
    #expect(check { $0.topP = 0 } == "top_p must be in (0, 1], got 0.0.")
    #expect(check { $0.topP = 1.5 } == "top_p must be in (0, 1], got 1.5.")
    #expect(check { $0.minP = -0.1 } == "min_p must be in [0, 1], got -0.1.")
    #expect(check { $0.minP = 1.1 } == "min_p must be in [0, 1], got 1.1.")
    #expect(check { $0.topK = 0 } == "top_k must be -1 (disable) or at least 1, got 0.")
    #expect(check { $0.topK = -2 } == "top_k must be -1 (disable) or at least 1, got -2.")
    #expect(check { $0.frequencyPenalty = 2.5 } == "frequency_penalty must be in [-2, 2], got 2.5.")
    #expect(check { $0.presencePenalty = -3 } == "presence_penalty must be in [-2, 2], got -3.0.")
    #expect(check { $0.repetitionPenalty = 0 } == "repetition_penalty must be in (0, 2] (1.0 = no penalty), got 0.0.")
    #expect(check { $0.repetitionPenalty = 2.5 } == "repetition_penalty must be in (0, 2] (1.0 = no penalty), got 2.5.")
    #expect(check { $0.maxNewTokens = -1 } == "max_new_tokens must be at least 0, got -1.")
    #expect(check { $0.minNewTokens = -1 } == "min_new_tokens must be in [0, max_new_tokens], got -1.")
    #expect(check { $0.minNewTokens = 200 } == "min_new_tokens must be in [0, max_new_tokens(128)], got 200.")
    #expect(check { $0.n = 0 } == "n must be in [1, 64], got 0.")
    #expect(check { $0.n = 65 } == "n must be in [1, 64], got 65.")
    #expect(check { $0.stopTokenIds = [3, 100] } == "stop_token_ids must be in [0, 99], got 100.")
    #expect(check { $0.stopTokenIds = [-1] } == "stop_token_ids must be in [0, 99], got -1.")
    #expect(check { $0.stop = Array(repeating: "x", count: 65) } == "at most 64 stop strings are allowed, got 65.")
    #expect(check { $0.stop = ["ok", ""] } == "stop strings must not be empty.")
    #expect(check({ _ in }, prompt: 1000) == "The input (1000 tokens) is longer than the model's context length (1000 tokens).")
    #expect(check({ $0.maxNewTokens = 100 }, prompt: 901) == """
        Requested token count exceeds the model's maximum context length of 1000 tokens. You requested a total of \
        1001 tokens: 901 tokens from the input messages and 100 tokens for the completion. Please reduce the number \
        of tokens in the input messages or the completion to fit within the limit.
        """)
    #expect(check({ $0.maxNewTokens = 100 }, prompt: 900) == nil)
    #expect(check({ $0.maxNewTokens = nil }, prompt: 999) == nil)
}
