import LoomCore

/// One prompt to continue, for offline generation.
public struct GenerationRequest {
    public var promptIds: [Int]
    public var maxNewTokens: Int
    public var temperature: Float
    public var seed: UInt64
    /// Generation stops after any of these (usually the model's EOS ids); empty: never.
    public var stopTokenIds: Set<Int>
    /// The adapter this request runs under (0: the base model); a step holds at most
    /// `maxAdaptersPerStep` distinct keys.
    public var adapterKey: UInt64

    public init(promptIds: [Int], maxNewTokens: Int, temperature: Float = 0, seed: UInt64 = 0, stopTokenIds: Set<Int> = [], adapterKey: UInt64 = 0) {
        self.adapterKey = adapterKey
        self.promptIds = promptIds
        self.maxNewTokens = maxNewTokens
        self.temperature = temperature
        self.seed = seed
        self.stopTokenIds = stopTokenIds
    }
}

/// Runs several prompts as one batch to completion: one prefill step for all prompts, then one
/// decode step per token for the unfinished ones. The serving engine does the same continuously.
public final class Generator {
    public let model: LlamaModel
    public let blockSize: Int

    public init(model: LlamaModel, blockSize: Int = 16) {
        self.model = model
        self.blockSize = blockSize
    }

    /// Called before each step with the sequence index of every token row, so a LoRA implementation
    /// can plan the step's segments.
    public typealias StepHook = (_ rowSequences: [Int]) throws -> LoRAApplier?

    /// Continues every request; returns the new token ids of each (without the prompt), and calls
    /// `onLogits` with each sequence's logits before sampling when given.
    public func generate(
        _ requests: [GenerationRequest], maxAdaptersPerStep: Int = .max, stepHook: StepHook? = nil,
        onLogits: ((_ sequence: Int, _ step: Int, _ logits: [Float]) -> Void)? = nil
    ) throws -> [[Int]] {
        let c = model.config
        for (i, r) in requests.enumerated() {
            guard !r.promptIds.isEmpty else { throw LoomError.invalidArgument("prompt \(i) is empty") }
            guard r.promptIds.count + r.maxNewTokens <= c.maxPositionEmbeddings else {
                throw LoomError.invalidArgument(
                    "prompt \(i): \(r.promptIds.count) prompt tokens + \(r.maxNewTokens) new tokens exceed the model's context of \(c.maxPositionEmbeddings)")
            }
            guard r.promptIds.count <= model.maxTokens else {
                throw LoomError.invalidArgument("prompt \(i): \(r.promptIds.count) tokens exceed the step size of \(model.maxTokens)")
            }
            if let bad = r.promptIds.first(where: { $0 < 0 || $0 >= c.vocabSize }) {
                throw LoomError.invalidArgument("prompt \(i): token id \(bad) is outside the vocabulary of \(c.vocabSize)")
            }
        }
        // Contiguous blocks per sequence: offline generation knows every length up front.
        var tables: [[Int32]] = []
        var nextBlock: Int32 = 0
        for r in requests {
            let blocks = (r.promptIds.count + r.maxNewTokens + blockSize - 1) / blockSize
            tables.append((0..<blocks).map { nextBlock + Int32($0) })
            nextBlock += Int32(blocks)
        }
        let cache = try KVCache(model: model, numBlocks: max(1, Int(nextBlock)), blockSize: blockSize)
        var samplers = requests.map { OfflineSampler(temperature: $0.temperature, seed: $0.seed) }
        var outputs = [[Int]](repeating: [], count: requests.count)
        var done = requests.map { $0.maxNewTokens <= 0 }
        var step = 0
        while true {
            var batch = ForwardBatch()
            var rowSequences: [Int] = []
            var members: [Int] = []
            var adapters: Set<UInt64> = []
            // Sequences in a rotating order, so that when adapters outnumber `maxAdaptersPerStep`
            // every sequence gets its turn; a whole prompt is one prefill.
            for k in 0..<requests.count {
                let s = (k + step) % requests.count
                let r = requests[s]
                if done[s] { continue }
                if !adapters.contains(r.adapterKey) && adapters.count >= maxAdaptersPerStep { continue }
                let newTokens: [Int32] = outputs[s].isEmpty ? r.promptIds.map(Int32.init) : [Int32(outputs[s].last!)]
                let start = outputs[s].isEmpty ? 0 : r.promptIds.count + outputs[s].count - 1
                if batch.tokenCount + newTokens.count > model.maxTokens || batch.sequenceCount == model.maxSequences { break }
                adapters.insert(r.adapterKey)
                batch.append(tokens: newTokens, startPosition: start, blockTable: tables[s], blockSize: blockSize)
                rowSequences += Array(repeating: s, count: newTokens.count)
                members.append(s)
            }
            if members.isEmpty { break }
            let lora = try stepHook?(rowSequences)
            let logits = model.backend.download(model.forward(batch, cache: cache, lora: lora))
            let vocab = c.vocabSize
            for (j, s) in members.enumerated() {
                let row = Array(logits[(j * vocab)..<((j + 1) * vocab)])
                onLogits?(s, outputs[s].count, row)
                let token = samplers[s].sample(row)
                outputs[s].append(token)
                if outputs[s].count >= requests[s].maxNewTokens || requests[s].stopTokenIds.contains(token) {
                    done[s] = true
                }
            }
            step += 1
        }
        return outputs
    }
}

/// Greedy decoding at temperature 0, else sampling from `softmax(logits / T)` with a seeded generator.
struct OfflineSampler {
    public var temperature: Float
    private var state: UInt64

    public init(temperature: Float, seed: UInt64) {
        self.temperature = temperature
        state = seed &+ 0x9E37_79B9_7F4A_7C15
    }

    public mutating func sample(_ logits: [Float]) -> Int {
        if temperature <= 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return best
        }
        let maxLogit = logits.max() ?? 0
        var weights = logits.map { expf(($0 - maxLogit) / temperature) }
        let total = weights.reduce(0, +)
        var u = Float(nextUniform()) * total
        for i in 0..<weights.count {
            u -= weights[i]
            if u <= 0 { return i }
        }
        weights.removeAll()
        return logits.count - 1
    }

    /// SplitMix64, mapped to [0, 1).
    private mutating func nextUniform() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53)
    }
}

#if canImport(Glibc)
import Glibc
#endif
