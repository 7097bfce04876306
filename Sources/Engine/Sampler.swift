import Foundation

/// One token's log-probability.
public struct TokenLogprob: Equatable, Sendable {
    public var token: Int
    public var logprob: Float

    public init(token: Int, logprob: Float) {
        self.token = token
        self.logprob = logprob
    }
}

/// What the sampler chose for one sequence, with the log-probabilities asked for.
public struct SampledToken: Equatable, Sendable {
    public var token: Int
    /// `log_softmax(raw logits)[token]`; `nil` unless asked for.
    public var logprob: Float?
    /// The most likely tokens under the raw logits, most likely first (lower id first on ties).
    public var topLogprobs: [TokenLogprob]

    public init(token: Int, logprob: Float? = nil, topLogprobs: [TokenLogprob] = []) {
        self.token = token
        self.logprob = logprob
        self.topLogprobs = topLogprobs
    }
}

/// Turns one row of fp32 logits into the next token of one sequence, on the host.
///
/// The order is SGLang's: penalties (repetition over prompt + output, then frequency and presence
/// over the output), `min_new_tokens` masking, then greedy argmax when `temperature` is 0 or
/// `top_k` is 1, else temperature → top-k → top-p → min-p and a draw from the sequence's own
/// `SamplingRNG`. Each filter renormalises what the previous one kept (as Hugging Face, vLLM and
/// SGLang's FlashInfer path do): top-p keeps the smallest most-likely set whose mass reaches
/// `top_p` of the top-k mass; min-p drops tokens below `min_p` times the most likely one.
///
/// Log-probabilities are those of the **raw** logits (plain log-softmax, before penalties,
/// masking and temperature): they describe the model, not the request's sampling settings, so
/// they are comparable across requests and with `transformers`. (SGLang reports those of the
/// processed distribution by default; a client reading `logprob` as model confidence wants these.)
///
/// Scratch buffers of vocabulary size are allocated once; a call allocates at most the sort's
/// temporary storage and the returned top-logprob list. Not thread-safe: one sampler per engine
/// loop. On a 128k vocabulary (release build) a draw costs about 0.1 ms greedy and 0.5–1 ms with
/// filters, dominated by one `exp` per logit.
public final class Sampler {
    public let vocabSize: Int
    /// Masked while `min_new_tokens` is not reached (unless `ignore_eos`).
    public let eosTokenIds: [Int]

    let work: UnsafeMutablePointer<Float>
    let candidates: UnsafeMutablePointer<Int32>
    let counts: UnsafeMutablePointer<Int32>
    let marks: UnsafeMutablePointer<Bool>
    var touched: [Int32] = []

    public init(vocabSize: Int, eosTokenIds: [Int]) {
        precondition(vocabSize > 0)
        self.vocabSize = vocabSize
        self.eosTokenIds = eosTokenIds
        work = .allocate(capacity: vocabSize)
        candidates = .allocate(capacity: vocabSize)
        counts = .allocate(capacity: vocabSize)
        counts.initialize(repeating: 0, count: vocabSize)
        marks = .allocate(capacity: vocabSize)
        marks.initialize(repeating: false, count: vocabSize)
        touched.reserveCapacity(4096)
    }

    deinit {
        work.deallocate()
        candidates.deallocate()
        counts.deallocate()
        marks.deallocate()
    }

    /// Samples the next token of a sequence from its logits row (`vocabSize` floats).
    public func sample(
        logits: UnsafeBufferPointer<Float>, params: SamplingParams, promptIds: [Int], outputIds: [Int],
        rng: inout SamplingRNG, returnLogprob: Bool = false, topLogprobsNum: Int = 0
    ) -> SampledToken {
        prepare(logits: logits, params: params, promptIds: promptIds, outputIds: outputIds)
        let best = UnsafeBufferPointer(start: work, count: vocabSize).firstArgmax
        let token: Int
        if !(work[best] > -.infinity) {
            // Everything masked: fall back to the raw argmax rather than invent a distribution.
            token = logits.firstArgmax
        } else if params.isGreedy {
            token = best
        } else {
            token = draw(maxLogit: work[best], params: params, rng: &rng)
        }
        var result = SampledToken(token: token)
        if returnLogprob || topLogprobsNum > 0 {
            let (chosen, top) = Self.logprobs(logits: logits, token: token, topN: topLogprobsNum)
            result.logprob = chosen
            result.topLogprobs = top
        }
        return result
    }

    /// `sample` for an array row.
    public func sample(
        logits: [Float], params: SamplingParams, promptIds: [Int], outputIds: [Int],
        rng: inout SamplingRNG, returnLogprob: Bool = false, topLogprobsNum: Int = 0
    ) -> SampledToken {
        logits.withUnsafeBufferPointer {
            sample(logits: $0, params: params, promptIds: promptIds, outputIds: outputIds, rng: &rng,
                   returnLogprob: returnLogprob, topLogprobsNum: topLogprobsNum)
        }
    }

    /// Samples a sequence's next token with its own params, history and random stream.
    public func sample(
        logits: UnsafeBufferPointer<Float>, for sequence: inout Sequence, returnLogprob: Bool = false, topLogprobsNum: Int = 0
    ) -> SampledToken {
        sample(logits: logits, params: sequence.params, promptIds: sequence.promptIds, outputIds: sequence.outputIds,
               rng: &sequence.rng, returnLogprob: returnLogprob, topLogprobsNum: topLogprobsNum)
    }

    /// Whether the next token of `sequence` is the plain argmax of its raw logits: greedy, no
    /// penalties, no stop token masked at this length, no logprobs wanted. Such rows can be
    /// sampled on the device, so only their token ids come back.
    public func isPlainArgmax(_ sequence: Sequence, returnLogprob: Bool, topLogprobsNum: Int) -> Bool {
        let p = sequence.params
        return p.isGreedy && !returnLogprob && topLogprobsNum == 0 && !p.hasPenalties
            && !masksStopTokens(params: p, outputCount: sequence.outputIds.count)
    }

    /// Whether `prepare` masks any stop token: before `min_new_tokens`, `stop_token_ids`, and EOS
    /// unless `ignore_eos`.
    func masksStopTokens(params p: SamplingParams, outputCount: Int) -> Bool {
        outputCount < p.minNewTokens && (!p.stopTokenIds.isEmpty || (!p.ignoreEos && !eosTokenIds.isEmpty))
    }

    /// Copies the row into `work` with penalties applied and, before `min_new_tokens`, the stop
    /// tokens masked: `stop_token_ids`, and EOS unless `ignore_eos` (EOS stops nothing then).
    func prepare(logits: UnsafeBufferPointer<Float>, params: SamplingParams, promptIds: [Int], outputIds: [Int]) {
        precondition(logits.count == vocabSize, "a logits row has \(logits.count) entries, the sampler \(vocabSize)")
        let n = vocabSize
        for i in 0..<n { work[i] = logits[i] }
        applyPenalties(params: params, promptIds: promptIds, outputIds: outputIds)
        if masksStopTokens(params: params, outputCount: outputIds.count) {
            for t in params.stopTokenIds where t >= 0 && t < n { work[t] = -.infinity }
            if !params.ignoreEos { for t in eosTokenIds where t >= 0 && t < n { work[t] = -.infinity } }
        }
    }

    /// Repetition penalty (Hugging Face: divide positive logits, multiply negative ones) over the
    /// distinct tokens of prompt and output, then `-= frequency · count + presence` over the output.
    func applyPenalties(params: SamplingParams, promptIds: [Int], outputIds: [Int]) {
        let n = vocabSize
        let rp = params.repetitionPenalty
        if rp != 1 {
            func penalise(_ ids: [Int]) {
                for t in ids where t >= 0 && t < n && !marks[t] {
                    marks[t] = true
                    touched.append(Int32(t))
                    let w = work[t]
                    work[t] = w > 0 ? w / rp : w * rp
                }
            }
            penalise(promptIds)
            penalise(outputIds)
            for t in touched { marks[Int(t)] = false }
            touched.removeAll(keepingCapacity: true)
        }
        let fp = params.frequencyPenalty, pp = params.presencePenalty
        if fp != 0 || pp != 0 {
            for t in outputIds where t >= 0 && t < n {
                if counts[t] == 0 { touched.append(Int32(t)) }
                counts[t] += 1
            }
            for t32 in touched {
                let t = Int(t32)
                work[t] -= fp * Float(counts[t]) + pp
                counts[t] = 0
            }
            touched.removeAll(keepingCapacity: true)
        }
    }
}
