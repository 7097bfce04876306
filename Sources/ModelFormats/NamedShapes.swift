import Foundation
import LoomCore

extension ModelConfig {
    /// The shapes of well-known checkpoints by name, so that benchmarks and synthetic adapters need
    /// no download. The values are those of the models' own `config.json` files.
    public static let namedShapes: [String: ModelConfig] = [
        "llama-3.1-8b": ModelConfig(
            architecture: .llama, vocabSize: 128_256, hiddenSize: 4096, intermediateSize: 14336,
            numLayers: 32, numHeads: 32, numKVHeads: 8, headDim: 128, ropeTheta: 500_000,
            ropeScaling: Llama3RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192),
            rmsNormEps: 1e-5, tieWordEmbeddings: false, maxPositionEmbeddings: 131_072,
            bosTokenId: 128_000, eosTokenIds: [128_001, 128_008, 128_009], weightDType: .bf16),
        "llama-3.2-1b": ModelConfig(
            architecture: .llama, vocabSize: 128_256, hiddenSize: 2048, intermediateSize: 8192,
            numLayers: 16, numHeads: 32, numKVHeads: 8, headDim: 64, ropeTheta: 500_000,
            ropeScaling: Llama3RopeScaling(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192),
            rmsNormEps: 1e-5, tieWordEmbeddings: true, maxPositionEmbeddings: 131_072,
            bosTokenId: 128_000, eosTokenIds: [128_001, 128_008, 128_009], weightDType: .bf16),
        "qwen2.5-7b": ModelConfig(
            architecture: .qwen2, vocabSize: 152_064, hiddenSize: 3584, intermediateSize: 18944,
            numLayers: 28, numHeads: 28, numKVHeads: 4, headDim: 128, ropeTheta: 1_000_000,
            rmsNormEps: 1e-6, tieWordEmbeddings: false, maxPositionEmbeddings: 32768, hasQKVBias: true,
            bosTokenId: 151_643, eosTokenIds: [151_645, 151_643], weightDType: .bf16),
    ]

    /// The names `named(_:)` knows, sorted.
    public static var knownShapeNames: [String] { namedShapes.keys.sorted() }

    /// The config of a named shape (`llama-3.1-8b`, `llama-3.2-1b`, `qwen2.5-7b`); an unknown name
    /// is refused with the list of known ones.
    public static func named(_ name: String) throws -> ModelConfig {
        guard let config = namedShapes[name.lowercased()] else {
            throw LoomError.invalidArgument("unknown model shape '\(name)' (known: \(knownShapeNames.joined(separator: ", ")))")
        }
        return config
    }

    /// A model folder (its `config.json`) or, when no such folder exists, a named shape.
    public static func load(folderOrShapeName value: String) throws -> ModelConfig {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: value, isDirectory: &isDirectory), isDirectory.boolValue {
            return try load(directory: value)
        }
        if namedShapes[value.lowercased()] != nil { return try named(value) }
        throw LoomError.invalidArgument("'\(value)' is neither a model folder nor a known shape (known: \(knownShapeNames.joined(separator: ", ")))")
    }
}
