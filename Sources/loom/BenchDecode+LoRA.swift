import CUDABackend
import Foundation
import LoomCore
import LoRA
import Models

/// The adapters of `loom bench decode --adapters N`: N synthetic adapters of one rank, every
/// projection, a slot each (`--max-loras-per-batch N`); sequence s uses adapter s mod N.
struct DecodeLoRA {
    let manager: LoRAManager
    let refs: [AdapterRef]
    let rank: Int
    /// `--lora-backend` as given.
    let backend: String
    /// Bytes of one adapter's A and B (bf16) that one rank reads per step.
    let bytesPerAdapter: Int
    let files: SyntheticAdapters

    /// Writes the adapters for `model`'s shape, loads them on every rank and makes them all resident,
    /// so that no timed step copies adapter weights.
    static func make(model: LlamaModel, modelName: String, gpus: [CUDABackend], communicators: [Communicator?], adapters: Int, rank: Int,
                     backend: String, chunkSize: Int, fusedDecodeRows: Int, fusedConsumerMaxRank: Int) throws -> DecodeLoRA {
        let files = try SyntheticAdapters.write(base: model.config, baseName: modelName, count: adapters, rank: rank)
        do {
            var options = try SyntheticAdapters.poolOptions(slots: adapters, rank: rank, backend: backend, chunkSize: chunkSize)
            options.fusedDecodeRows = fusedDecodeRows
            options.fusedConsumerMaxRank = fusedConsumerMaxRank
            let manager = try LoRAManager(options: options, model: model, maxTokens: model.maxTokens, initial: files.specs)
            let refs = try manager.registry.resolve(files.specs.map(\.name)).map { $0! }
            let lora = DecodeLoRA(manager: manager, refs: refs, rank: rank, backend: backend,
                                  bytesPerAdapter: SyntheticAdapters.bytesPerAdapter(model.ranks[0].local, rank: rank), files: files)
            try lora.makeResident(maxRows: model.maxTokens)
            for g in gpus { g.synchronize() }
            return lora
        } catch {
            files.remove()
            throw error
        }
    }

    /// One prepare per `maxRows` adapters: the first prepare of an adapter copies it into its slot.
    func makeResident(maxRows: Int) throws {
        var i = 0
        while i < refs.count {
            let chunk = Array(refs[i..<min(refs.count, i + maxRows)])
            _ = try manager.prepare(rowAdapters: chunk)
            i += chunk.count
        }
    }

    /// The adapter of each token row of a step that holds `rowsPerSequence` rows of each of `sequences`.
    static func rowAdapters(sequences: Range<Int>, rowsPerSequence: Int, adapters: Int) -> [Int] {
        sequences.flatMap { s in repeatElement(s % adapters, count: rowsPerSequence) }
    }

    /// Copies the step's plan into the manager's device buffers and returns the step's applier.
    /// Call it outside a graph body: a replay skips the body's launches, a capture may not copy.
    func prepare(sequences: Range<Int>, rowsPerSequence: Int, forGraph: Bool) throws -> LoRAApplier {
        let rows = Self.rowAdapters(sequences: sequences, rowsPerSequence: rowsPerSequence, adapters: refs.count).map { refs[$0] }
        guard let applier = try manager.prepare(rowAdapters: rows, forGraph: forGraph) else {
            preconditionFailure("every row names an adapter, so the step has an applier")
        }
        return applier
    }

    /// Distinct adapters in a decode step of `batch` sequences.
    func distinctAdapters(batch: Int) -> Int { min(batch, refs.count) }

    /// Adapter bytes one rank reads in a decode step of `batch` sequences: each distinct adapter's
    /// A and B once.
    func bytesPerStep(batch: Int) -> Int { distinctAdapters(batch: batch) * bytesPerAdapter }

    func removeFiles() { files.remove() }
}
