import LoomCore

/// How one request samples and when it stops, under SGLang's `sampling_params` names and defaults.
///
/// Decoding (`SamplingParams+Codable.swift`) follows SGLang: unknown keys are ignored and an explicit
/// `null` means "the default", except `max_new_tokens: null`, which means "until the context is full".
public struct SamplingParams: Equatable, Sendable {
    /// The largest number of generated tokens; `nil`: as many as the model's context allows.
    public var maxNewTokens: Int? = 128
    /// 0 (or below 1e-6) samples greedily.
    public var temperature: Float = 1.0
    public var topP: Float = 1.0
    /// -1 keeps the whole vocabulary; 1 is greedy.
    public var topK: Int = -1
    /// Drops tokens whose probability is below `minP` times the most likely token's.
    public var minP: Float = 0
    public var frequencyPenalty: Float = 0
    public var presencePenalty: Float = 0
    /// Hugging Face's repetition penalty over prompt and output; 1 is off.
    public var repetitionPenalty: Float = 1.0
    /// EOS and `stopTokenIds` cannot be sampled before this many tokens were generated.
    public var minNewTokens: Int = 0
    /// Stop strings, matched by the caller on detokenized text.
    public var stop: [String] = []
    public var stopTokenIds: [Int] = []
    /// Keeps generating past EOS (stop token ids still stop).
    public var ignoreEos: Bool = false
    public var skipSpecialTokens: Bool = true
    /// Accepted for compatibility; the detokenizer decides the spacing.
    public var spacesBetweenSpecialTokens: Bool = true
    /// Number of completions to sample for the prompt; the server fans them out into sequences.
    public var n: Int = 1
    /// Makes sampling reproducible; without it each sequence draws a random seed.
    public var samplingSeed: Int? = nil
    /// Keeps the matched stop string at the end of the output text.
    public var noStopTrim: Bool = false

    /// The largest `n` and the most stop strings accepted; more is almost surely a client bug and
    /// would cost memory for nothing.
    public static let maxN = 64
    public static let maxStopStrings = 64
    /// Below this temperature sampling is greedy (SGLang's `_SAMPLING_EPS`).
    public static let greedyTemperature: Float = 1e-6

    public init() {}

    /// True when the next token is the argmax: temperature 0 or `top_k == 1`.
    public var isGreedy: Bool { temperature < Self.greedyTemperature || topK == 1 }
    /// Whether a repetition, frequency or presence penalty changes the logits.
    public var hasPenalties: Bool { repetitionPenalty != 1 || frequencyPenalty != 0 || presencePenalty != 0 }

    /// Checks every range SGLang checks and throws `LoomError.invalidArgument` with SGLang's wording.
    ///
    /// `promptTokenCount`, when given, also checks that prompt and completion fit the context
    /// (`maxContext` tokens), the check SGLang's tokenizer manager makes.
    public func validate(vocabSize: Int, maxContext: Int, promptTokenCount: Int = 0) throws {
        func fail(_ message: String) -> LoomError { .invalidArgument(message) }
        guard temperature.isFinite, temperature >= 0 else {
            throw fail("temperature must be a non-negative finite number, got \(temperature).")
        }
        guard topP > 0, topP <= 1 else { throw fail("top_p must be in (0, 1], got \(topP).") }
        guard minP >= 0, minP <= 1 else { throw fail("min_p must be in [0, 1], got \(minP).") }
        guard topK == -1 || topK >= 1 else { throw fail("top_k must be -1 (disable) or at least 1, got \(topK).") }
        guard frequencyPenalty >= -2, frequencyPenalty <= 2 else {
            throw fail("frequency_penalty must be in [-2, 2], got \(frequencyPenalty).")
        }
        guard presencePenalty >= -2, presencePenalty <= 2 else {
            throw fail("presence_penalty must be in [-2, 2], got \(presencePenalty).")
        }
        guard repetitionPenalty > 0, repetitionPenalty <= 2 else {
            throw fail("repetition_penalty must be in (0, 2] (1.0 = no penalty), got \(repetitionPenalty).")
        }
        guard minNewTokens >= 0 else { throw fail("min_new_tokens must be in [0, max_new_tokens], got \(minNewTokens).") }
        if let maxNewTokens {
            guard maxNewTokens >= 0 else { throw fail("max_new_tokens must be at least 0, got \(maxNewTokens).") }
            guard minNewTokens <= maxNewTokens else {
                throw fail("min_new_tokens must be in [0, max_new_tokens(\(maxNewTokens))], got \(minNewTokens).")
            }
        }
        guard n >= 1, n <= Self.maxN else { throw fail("n must be in [1, \(Self.maxN)], got \(n).") }
        if let bad = stopTokenIds.first(where: { $0 < 0 || $0 >= vocabSize }) {
            throw fail("stop_token_ids must be in [0, \(vocabSize - 1)], got \(bad).")
        }
        guard stop.count <= Self.maxStopStrings else {
            throw fail("at most \(Self.maxStopStrings) stop strings are allowed, got \(stop.count).")
        }
        guard !stop.contains("") else { throw fail("stop strings must not be empty.") }
        guard promptTokenCount < maxContext else {
            throw fail("The input (\(promptTokenCount) tokens) is longer than the model's context length (\(maxContext) tokens).")
        }
        // Compared without adding: a huge max_new_tokens (Int.max) must not overflow.
        if let maxNewTokens, maxNewTokens > maxContext - promptTokenCount {
            let total = promptTokenCount.addingReportingOverflow(maxNewTokens)
            throw fail(
                "Requested token count exceeds the model's maximum context length of \(maxContext) tokens. "
                    + "You requested a total of \(total.overflow ? "more than \(Int.max)" : "\(total.partialValue)") tokens: \(promptTokenCount) tokens from the input "
                    + "messages and \(maxNewTokens) tokens for the completion. Please reduce the number of tokens in the "
                    + "input messages or the completion to fit within the limit.")
        }
    }
}
