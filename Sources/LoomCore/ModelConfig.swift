/// The shape and hyper-parameters of a Llama-family model, read from `config.json`.
public struct ModelConfig: Sendable, Equatable {
    public enum Architecture: String, Sendable {
        case llama = "LlamaForCausalLM"
        case mistral = "MistralForCausalLM"
        case qwen2 = "Qwen2ForCausalLM"
    }

    /// Llama 3.1 frequency scaling (`rope_scaling.rope_type == "llama3"`).
    public struct Llama3RopeScaling: Sendable, Equatable {
        public var factor: Double
        public var lowFreqFactor: Double
        public var highFreqFactor: Double
        public var originalMaxPositionEmbeddings: Int

        public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositionEmbeddings: Int) {
            self.factor = factor
            self.lowFreqFactor = lowFreqFactor
            self.highFreqFactor = highFreqFactor
            self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
        }
    }

    public var architecture: Architecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var ropeTheta: Double
    public var ropeScaling: Llama3RopeScaling?
    public var rmsNormEps: Float
    public var tieWordEmbeddings: Bool
    public var maxPositionEmbeddings: Int
    /// q/k/v projections carry a bias (Qwen2, or `attention_bias: true`).
    public var hasQKVBias: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    /// The dtype the checkpoint declares (`torch_dtype` / `dtype`).
    public var weightDType: DType

    public init(
        architecture: Architecture, vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
        numLayers: Int, numHeads: Int, numKVHeads: Int, headDim: Int? = nil,
        ropeTheta: Double = 10000, ropeScaling: Llama3RopeScaling? = nil, rmsNormEps: Float = 1e-5,
        tieWordEmbeddings: Bool = false, maxPositionEmbeddings: Int = 2048, hasQKVBias: Bool = false,
        bosTokenId: Int? = 1, eosTokenIds: [Int] = [2], weightDType: DType = .f32
    ) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim ?? hiddenSize / numHeads
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.rmsNormEps = rmsNormEps
        self.tieWordEmbeddings = tieWordEmbeddings
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hasQKVBias = hasQKVBias
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.weightDType = weightDType
    }

    public var qSize: Int { numHeads * headDim }
    public var kvSize: Int { numKVHeads * headDim }
    /// Output width of the stacked q/k/v projection.
    public var qkvSize: Int { qSize + 2 * kvSize }

    /// RoPE inverse frequencies, `headDim / 2` of them, with Llama 3.1 scaling applied,
    /// computed as transformers does (`_compute_default_rope_parameters`, `_compute_llama3_parameters`).
    public func ropeInverseFrequencies() -> [Float] {
        let half = headDim / 2
        var inv = (0..<half).map { i -> Float in
            let exponent = Float(2 * i) / Float(headDim)
            return 1.0 / Float(pow(ropeTheta, Double(exponent)))
        }
        if let s = ropeScaling {
            let old = Double(s.originalMaxPositionEmbeddings)
            let lowWavelen = old / s.lowFreqFactor
            let highWavelen = old / s.highFreqFactor
            inv = inv.map { f -> Float in
                let freq = Double(f)
                let wavelen = 2 * Double.pi / freq
                if wavelen < highWavelen { return f }
                if wavelen > lowWavelen { return Float(freq / s.factor) }
                let smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                return Float((1 - smooth) * freq / s.factor + smooth * freq)
            }
        }
        return inv
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
