import LoomCore

/// SGLang's JSON: snake_case keys, unknown keys ignored, `null` as the default, `stop` as a string or
/// a list. A value of the wrong type throws `LoomError.invalidArgument` naming the field, so the
/// server can answer 400 with a message a client can act on (Foundation's `DecodingError` text
/// names Swift types and coding paths instead).
extension SamplingParams: Codable {
    enum CodingKeys: String, CodingKey {
        case maxNewTokens = "max_new_tokens"
        case temperature
        case topP = "top_p"
        case topK = "top_k"
        case minP = "min_p"
        case frequencyPenalty = "frequency_penalty"
        case presencePenalty = "presence_penalty"
        case repetitionPenalty = "repetition_penalty"
        case minNewTokens = "min_new_tokens"
        case stop
        case stopTokenIds = "stop_token_ids"
        case ignoreEos = "ignore_eos"
        case skipSpecialTokens = "skip_special_tokens"
        case spacesBetweenSpecialTokens = "spaces_between_special_tokens"
        case n
        case samplingSeed = "sampling_seed"
        case noStopTrim = "no_stop_trim"
    }

    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if c.contains(.maxNewTokens) {
            maxNewTokens = try Self.field(c, .maxNewTokens, Int.self, "an integer")
        }
        temperature = try Self.field(c, .temperature, Float.self, "a number") ?? temperature
        topP = try Self.field(c, .topP, Float.self, "a number") ?? topP
        topK = try Self.field(c, .topK, Int.self, "an integer") ?? topK
        minP = try Self.field(c, .minP, Float.self, "a number") ?? minP
        frequencyPenalty = try Self.field(c, .frequencyPenalty, Float.self, "a number") ?? frequencyPenalty
        presencePenalty = try Self.field(c, .presencePenalty, Float.self, "a number") ?? presencePenalty
        repetitionPenalty = try Self.field(c, .repetitionPenalty, Float.self, "a number") ?? repetitionPenalty
        minNewTokens = try Self.field(c, .minNewTokens, Int.self, "an integer") ?? minNewTokens
        if let one = try? c.decodeIfPresent(String.self, forKey: .stop) {
            stop = [one]
        } else {
            stop = try Self.field(c, .stop, [String].self, "a string or a list of strings") ?? []
        }
        stopTokenIds = try Self.field(c, .stopTokenIds, [Int?].self, "a list of integers")?.compactMap { $0 } ?? []
        ignoreEos = try Self.field(c, .ignoreEos, Bool.self, "a boolean") ?? ignoreEos
        skipSpecialTokens = try Self.field(c, .skipSpecialTokens, Bool.self, "a boolean") ?? skipSpecialTokens
        spacesBetweenSpecialTokens =
            try Self.field(c, .spacesBetweenSpecialTokens, Bool.self, "a boolean") ?? spacesBetweenSpecialTokens
        n = try Self.field(c, .n, Int.self, "an integer") ?? n
        samplingSeed = try Self.field(c, .samplingSeed, Int.self, "an integer")
        noStopTrim = try Self.field(c, .noStopTrim, Bool.self, "a boolean") ?? noStopTrim
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(maxNewTokens, forKey: .maxNewTokens)
        try c.encode(temperature, forKey: .temperature)
        try c.encode(topP, forKey: .topP)
        try c.encode(topK, forKey: .topK)
        try c.encode(minP, forKey: .minP)
        try c.encode(frequencyPenalty, forKey: .frequencyPenalty)
        try c.encode(presencePenalty, forKey: .presencePenalty)
        try c.encode(repetitionPenalty, forKey: .repetitionPenalty)
        try c.encode(minNewTokens, forKey: .minNewTokens)
        try c.encode(stop, forKey: .stop)
        try c.encode(stopTokenIds, forKey: .stopTokenIds)
        try c.encode(ignoreEos, forKey: .ignoreEos)
        try c.encode(skipSpecialTokens, forKey: .skipSpecialTokens)
        try c.encode(spacesBetweenSpecialTokens, forKey: .spacesBetweenSpecialTokens)
        try c.encode(n, forKey: .n)
        try c.encodeIfPresent(samplingSeed, forKey: .samplingSeed)
        try c.encode(noStopTrim, forKey: .noStopTrim)
    }

    /// The field's value, `nil` when absent or `null`; a value of another type throws
    /// "sampling_params.<name> must be <expected>, got <what was there>".
    private static func field<T: Decodable>(
        _ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys, _ type: T.Type, _ expected: String
    ) throws -> T? {
        do {
            return try c.decodeIfPresent(T.self, forKey: key)
        } catch {
            // Foundation throws its own internal error for numbers that do not fit (1.5 as an Int).
            throw LoomError.invalidArgument(
                "sampling_params.\(key.stringValue) must be \(expected), got \(describe(c, key)).")
        }
    }

    /// A JSON-level name for what a field holds, for error messages.
    private static func describe(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) -> String {
        if (try? c.decode(Bool.self, forKey: key)) != nil { return "a boolean" }
        if let d = try? c.decode(Double.self, forKey: key) {
            return d == d.rounded() && abs(d) < 1e15 ? "the number \(Int(d))" : "the number \(d)"
        }
        if (try? c.decode(String.self, forKey: key)) != nil { return "a string" }
        if (try? c.nestedUnkeyedContainer(forKey: key)) != nil { return "a list" }
        if (try? c.nestedContainer(keyedBy: CodingKeys.self, forKey: key)) != nil { return "an object" }
        return "a value of another type"
    }
}
