import LoomCore

/// One forward step as the host describes it: flat tokens of all sequences, where each token's KV
/// goes, and which rows need logits. The model copies it into persistent device buffers.
public struct ForwardBatch {
    /// Token ids, sequence after sequence.
    public var tokens: [Int32] = []
    public var positions: [Int32] = []
    /// Each token's KV cache slot (`block · blockSize + offset`).
    public var slotMapping: [Int32] = []
    /// `numSequences + 1` offsets into `tokens`.
    public var queryStarts: [Int32] = [0]
    /// Each sequence's KV length after this step.
    public var contextLengths: [Int32] = []
    /// Each sequence's KV block ids.
    public var blockTables: [[Int32]] = []
    /// Token rows whose logits are returned, in order (usually each sequence's last row).
    public var logitsRows: [Int32] = []

    public init() {}

    public var tokenCount: Int { tokens.count }
    public var sequenceCount: Int { contextLengths.count }

    /// Appends one sequence's new tokens (`tokens` at `startPosition ...`), its block table, and
    /// asks for the logits of its last token when `wantsLogits`.
    public mutating func append(tokens new: [Int32], startPosition: Int, blockTable: [Int32], blockSize: Int, wantsLogits: Bool = true) {
        precondition(!new.isEmpty, "a sequence contributes at least one token")
        for (j, t) in new.enumerated() {
            let position = startPosition + j
            tokens.append(t)
            positions.append(Int32(position))
            slotMapping.append(blockTable[position / blockSize] * Int32(blockSize) + Int32(position % blockSize))
        }
        queryStarts.append(Int32(tokens.count))
        contextLengths.append(Int32(startPosition + new.count))
        blockTables.append(blockTable)
        if wantsLogits { logitsRows.append(Int32(tokens.count - 1)) }
    }

    /// Appends `count` dummy sequences that pad a decode step to a CUDA graph's batch size: one
    /// row each (token 0 at position 0), KV slot -1 (`ropeAndWriteKV` writes no cache row), block table `[0]`,
    /// context length 1 and a logits row. Their rows attend to whatever block 0 holds; their
    /// logits follow the real ones and are ignored.
    public mutating func appendPadding(count: Int) {
        precondition(count >= 0)
        for _ in 0..<count {
            tokens.append(0)
            positions.append(0)
            slotMapping.append(-1)
            queryStarts.append(Int32(tokens.count))
            contextLengths.append(1)
            blockTables.append([0])
            logitsRows.append(Int32(tokens.count - 1))
        }
    }
}

/// Where a LoRA implementation adds its deltas: after each projection group's base GEMM.
public enum ProjectionGroup: Int, CaseIterable, Sendable {
    case qkv, o, gateUp, down
}

/// Adds adapter deltas to projection outputs for the current batch (the `LoRA` target implements it).
public protocol LoRAApplier: AnyObject {
    /// `output += Σ_segments scaling · B(A input)` for the rows of each segment's adapter, on
    /// tensor-parallel rank `rank` (0 without tensor parallelism). For `o` and `down` it is called
    /// after the output's all-reduce.
    func apply(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor, output: DeviceTensor)
    /// What the group's GEMM multiplies by its weight: `input`, or (`--lora-backend fused`, whose
    /// weights carry the slots' B in extra columns) `input` with the scaled shrink results beside
    /// it, so that the GEMM itself adds the deltas and `apply` has nothing left to do; with split
    /// extensions (gate/up) a copy of that for each module, `[S, n, k]`, for
    /// `linear(gemmInput:weight:bias:out:)`.
    func gemmInput(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor) -> DeviceTensor
    /// Where the op making the group's input should write it, or nil for anywhere: with
    /// `--lora-backend fused` on the widened K, the first columns of the GEMM's wide input, so that
    /// `gemmInput` (given that tensor back) adds the shrink results beside it and copies nothing;
    /// with split extensions every module's copy of it, `[S, n, k]`, each to get the same rows
    /// (`DeviceTensor.outputCopies`: the norms write them all).
    func inputBuffer(rank: Int, layer: Int, group: ProjectionGroup) -> DeviceTensor?
    /// Whether `apply` adds into the group's GEMM output: false where the group is not adapted or
    /// its GEMM adds the deltas itself (fused), so that the model may leave that output unsummed.
    func addsToOutput(rank: Int, layer: Int, group: ProjectionGroup) -> Bool
    /// Called before the group's GEMM: may queue the group's shrink of `input` on the backend's side
    /// stream, beside the GEMM, for the `apply` that follows to join and expand.
    func shrinkAhead(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor)
    /// How the group runs where its GEMM also shrinks and the op consuming its output adds the
    /// delta (`--lora-backend fused` at decode), or nil where `gemmInput` and `apply` say how.
    func consumerLoRA(rank: Int, layer: Int, group: ProjectionGroup) -> ConsumerLoRA?
}

extension LoRAApplier {
    public func shrinkAhead(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor) {}
    public func consumerLoRA(rank: Int, layer: Int, group: ProjectionGroup) -> ConsumerLoRA? { nil }
    public func inputBuffer(rank: Int, layer: Int, group: ProjectionGroup) -> DeviceTensor? { nil }
}

/// A group whose GEMM shrinks too: `weight` is its own rows, then every slot's A
/// (`[out + extension, ≥ in]`, read in x's columns); `output` `[n, out + extension]` takes the
/// GEMM's output and `slices` `[S, n, out + extension]` (f32, row-parallel groups only, where the
/// backend cuts K) its K-slices instead; `delta` is what the consuming op adds (`LoRADelta`).
public struct ConsumerLoRA {
    public var weight: DeviceTensor
    public var output: DeviceTensor
    public var slices: DeviceTensor?
    public var delta: LoRADelta

    public init(weight: DeviceTensor, output: DeviceTensor, slices: DeviceTensor?, delta: LoRADelta) {
        self.weight = weight
        self.output = output
        self.slices = slices
        self.delta = delta
    }
}

/// The projection weights of a model, which a LoRA backend that folds B into the base GEMM widens.
public protocol ProjectionWeights: AnyObject {
    var tensorParallelSize: Int { get }
    var numLayers: Int { get }
    /// Rank `rank`'s weight of `group` in `layer`: `[out, in]` (or wider, once replaced).
    func projection(rank: Int, layer: Int, group: ProjectionGroup) -> DeviceTensor
    /// Replaces that weight by `weight` `[out, k ≥ in]`, whose first `in` columns must equal the old
    /// weight (the model's `linear` reads only those when no adapter runs).
    func replaceProjection(rank: Int, layer: Int, group: ProjectionGroup, with weight: DeviceTensor)
}
