import LoomCore
import ModelFormats

/// One row of `loom bench lora-kernels`: a phase, an adapter rank, the token rows of the step and
/// how many distinct adapters they use.
struct LoRAKernelCase: Equatable, CustomStringConvertible {
    enum Phase: String, CaseIterable {
        /// One token per sequence; token i uses adapter i mod `adapters`.
        case decode
        /// Contiguous sequences of `sequenceLength` rows; sequence j uses adapter j mod `adapters`.
        case prefill
    }

    var phase: Phase
    var rank: Int
    var tokens: Int
    var adapters: Int
    /// Rows per prefill sequence (512 in the issue's table: 4 sequences × 512).
    var sequenceLength = LoRAKernelCase.prefillSequenceLength

    static let prefillSequenceLength = 512

    var description: String {
        "\(phase.rawValue) r\(rank) t\(tokens) a\(adapters)" + (phase == .prefill && sequenceLength != Self.prefillSequenceLength ? " s\(sequenceLength)" : "")
    }

    /// The issue's table, in its order.
    static let issueMatrix: [LoRAKernelCase] = [
        .init(phase: .decode, rank: 16, tokens: 1, adapters: 1),
        .init(phase: .decode, rank: 16, tokens: 32, adapters: 8),
        .init(phase: .decode, rank: 16, tokens: 256, adapters: 8),
        .init(phase: .prefill, rank: 16, tokens: 2048, adapters: 4),
        .init(phase: .decode, rank: 64, tokens: 32, adapters: 8),
        .init(phase: .decode, rank: 64, tokens: 256, adapters: 8),
        .init(phase: .prefill, rank: 64, tokens: 2048, adapters: 4),
    ]

    /// Parses `--rows`: `phase:rank:tokens:adapters`, comma-separated (`decode:16:32:8,prefill:64:2048:4`);
    /// a prefill row may add its sequence length (`prefill:16:512:4:128`: 4 sequences of 128 rows).
    static func parse(_ text: String) throws -> [LoRAKernelCase] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !items.isEmpty else { throw LoomError.invalidArgument("--rows: give phase:rank:tokens:adapters, comma-separated") }
        return try items.map { item in
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 4 || (parts.count == 5 && parts[0] == Phase.prefill.rawValue), let phase = Phase(rawValue: parts[0]),
                  let rank = Int(parts[1]), let tokens = Int(parts[2]), let adapters = Int(parts[3]),
                  let sequenceLength = parts.count == 5 ? Int(parts[4]) : Self.prefillSequenceLength
            else {
                throw LoomError.invalidArgument(
                    "--rows: '\(item)' is not phase:rank:tokens:adapters (phase decode or prefill; prefill may add :sequence_length), e.g. decode:16:32:8")
            }
            let c = LoRAKernelCase(phase: phase, rank: rank, tokens: tokens, adapters: adapters, sequenceLength: sequenceLength)
            try c.validate()
            return c
        }
    }

    /// Adapters come from a pool of `poolSlots` slots (8, the issue's table, or as many as a row asks).
    static let maxAdapters = 256
    static func poolSlots(_ cases: [LoRAKernelCase]) -> Int { max(8, cases.map(\.adapters).max() ?? 8) }

    func validate() throws {
        guard rank >= 1, tokens >= 1, sequenceLength >= 1 else {
            throw LoomError.invalidArgument("--rows: '\(self)': rank, tokens and sequence length must be positive")
        }
        guard (1...Self.maxAdapters).contains(adapters) else {
            throw LoomError.invalidArgument("--rows: '\(self)': adapters must be between 1 and \(Self.maxAdapters)")
        }
    }

    /// The adapter (0 ..< `adapters`) of each token row.
    var rowAdapters: [Int] {
        switch phase {
        case .decode: return (0..<tokens).map { $0 % adapters }
        case .prefill: return (0..<tokens).map { ($0 / sequenceLength) % adapters }
        }
    }

    /// Adapters the step actually uses (a short prefill may not reach all of them).
    var distinctAdapters: Int { Set(rowAdapters).count }

    /// The bytes of the distinct adapters' A and B (bf16) that one layer's LoRA work must read.
    func adapterBytes(_ layerShape: ModelConfig) -> Int {
        var oneLayer = layerShape
        oneLayer.numLayers = 1
        return distinctAdapters * SyntheticAdapters.bytesPerAdapter(oneLayer, rank: rank)
    }

    /// SGLang's figures for this row, when the issue's table has it.
    var reference: SGLangLoRAReference? { SGLangLoRAReference.table[self] }
}

extension LoRAKernelCase: Hashable {}

/// SGLang's published per-layer figures, as the issue quotes them (Llama-3.1-8B shapes, H200, all
/// seven projections targeted), and the issue's goal for Loom's LoRA / base ratio. Hard-coded
/// reference numbers, not measurements of this machine.
struct SGLangLoRAReference: Equatable {
    /// SGLang's base GEMMs of one layer, µs.
    var baseMicroseconds: Double
    /// SGLang's LoRA work of one layer with its csgmv backend, µs.
    var csgmvMicroseconds: Double
    /// The same with its triton backend, µs.
    var tritonMicroseconds: Double
    /// The issue's goal: Loom's LoRA µs / base µs at most this.
    var goalRatio: Double

    static let table: [LoRAKernelCase: SGLangLoRAReference] = {
        let base: [Double] = [114, 122, 197, 1293, 122, 198, 1290]
        let csgmv: [Double] = [74, 88, 185, 800, 153, 285, 1590]
        let triton: [Double] = [61, 72, 106, 325, 143, 210, 1164]
        let goal = [0.10, 0.08, 0.08, 0.05, 0.25, 0.25, 0.12]
        var t: [LoRAKernelCase: SGLangLoRAReference] = [:]
        for (i, c) in LoRAKernelCase.issueMatrix.enumerated() {
            t[c] = SGLangLoRAReference(baseMicroseconds: base[i], csgmvMicroseconds: csgmv[i], tritonMicroseconds: triton[i], goalRatio: goal[i])
        }
        return t
    }()
}
