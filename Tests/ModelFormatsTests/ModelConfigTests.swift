import Foundation
import LoomCore
import ModelFormats
import Testing

@Suite struct ModelConfigTests {
    @Test func readsEachFamily() throws {
        let stories = try ModelConfig.load(directory: fixture("stories260k"))
        #expect(stories.architecture == .llama && stories.numKVHeads == 4 && stories.headDim == 8 && stories.tieWordEmbeddings)
        let llama = try ModelConfig.load(directory: fixture("models/llama-tiny"))
        #expect(llama.headDim == 48 && llama.qSize == 192 && llama.ropeScaling?.factor == 8 && llama.weightDType == .bf16)
        #expect(llama.ropeTheta == 500000)
        let mistral = try ModelConfig.load(directory: fixture("models/mistral-tiny"))
        #expect(mistral.architecture == .mistral && mistral.weightDType == .f16)
        let qwen = try ModelConfig.load(directory: fixture("models/qwen2-tiny"))
        #expect(qwen.architecture == .qwen2 && qwen.hasQKVBias && qwen.tieWordEmbeddings && qwen.rmsNormEps == 1e-6)
    }

    @Test func llama3ScalingChangesOnlyLowFrequencies() throws {
        let json = #"{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "rope_theta": 500000, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#
        let config = try ModelConfig.parse(Data(json.utf8), path: "config.json")
        var plain = config
        plain.ropeScaling = nil
        let scaled = config.ropeInverseFrequencies(), base = plain.ropeInverseFrequencies()
        #expect(scaled[0] == base[0])                            // high frequency: kept
        #expect(abs(scaled[31] - base[31] / 8) < 1e-12)          // lowest frequency: divided by the factor
    }

    @Test func refusesWhatItCannotRun() throws {
        func parse(_ json: String) throws -> ModelConfig { try ModelConfig.parse(Data(json.utf8), path: "/m/config.json") }
        #expect(throws: LoomError.unsupported("/m/config.json: architectures [\"GPT2LMHeadModel\"] are not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)")) {
            try parse(#"{"architectures": ["GPT2LMHeadModel"]}"#)
        }
        #expect(throws: LoomError.invalidFile(path: "/m/config.json", reason: "'hidden_size' is missing or not a positive integer")) {
            try parse(#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 10}"#)
        }
        #expect(throws: LoomError.self) {
            try parse(#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2}"#)
        }
        #expect(throws: LoomError.unsupported("/m/config.json: rope_scaling type 'yarn' is not supported (llama3 only)")) {
            try parse(#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "rope_scaling": {"type": "yarn", "factor": 4}}"#)
        }
        #expect(throws: LoomError.invalidFile(path: "/m/config.json", reason: "not a JSON object")) { try parse("[1") }
        #expect(throws: LoomError.fileNotFound(path: "/nonexistent/config.json")) { try ModelConfig.load(directory: "/nonexistent") }
    }
}
