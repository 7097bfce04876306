import Foundation
import LoomCore
import ModelFormats
import Testing
import Tokenization

@testable import loom

/// `loom serve --random-weights SHAPE` on a machine without a GPU: what it refuses, and the model
/// folder it would serve (config, sparse weights, the bundled tokenizer).
@Suite struct ServeRandomWeightsTests {
    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(try #require(loomBinary, "the loom binary is not built"), arguments)
    }

    @Test func needsDeviceCUDA() throws {
        for extra in [[], ["--device", "cpu"]] {
            let result = try run(["serve", "--random-weights", "llama-3.2-1b"] + extra)
            #expect(result.status != 0)
            #expect(result.stderr.contains("--random-weights needs --device cuda"), "\(result.stderr)")
        }
    }

    @Test func refusesAModelPathOrAnUnknownShape() throws {
        let both = try run(["serve", "--random-weights", "llama-3.2-1b", "--device", "cuda", "--model-path", fixture("stories260k")])
        #expect(both.status != 0 && both.stderr.contains("--random-weights and --model-path are mutually exclusive"), "\(both.stderr)")
        let unknown = try run(["serve", "--random-weights", "llama-9", "--device", "cuda"])
        #expect(unknown.status != 0 && unknown.stderr.contains("unknown shape 'llama-9' (known: llama-3.1-8b, llama-3.2-1b, qwen2.5-7b)"), "\(unknown.stderr)")
    }

    @Test func helpListsTheNewOptions() throws {
        let serve = try run(["serve", "--help"])
        #expect(serve.status == 0 && serve.stdout.contains("--random-weights <random-weights>"))
        let decode = try run(["bench", "decode", "--help"])
        for option in ["--adapters <adapters>", "--rank <rank>", "--lora-backend <lora-backend>", "--max-lora-chunk-size <max-lora-chunk-size>"] {
            #expect(decode.stdout.contains(option), "bench decode --help lacks \(option)")
        }
        let kernels = try run(["bench", "lora-kernels", "--help"])
        for option in ["--lora-backend <lora-backend>", "--max-lora-chunk-size <max-lora-chunk-size>", "--rows <rows>", "--repeats <repeats>",
                       "--output <output>", "--commit <commit>"] {
            #expect(kernels.stdout.contains(option), "bench lora-kernels --help lacks \(option)")
        }
        #expect(try run(["bench", "--help"]).stdout.contains("lora-kernels"))
    }

    /// The first two decode steps warm up untimed: fewer than 4 new tokens would time none (and
    /// write NaN figures), so they are refused before any device work.
    @Test func benchDecodeTimesAtLeastOneStep() throws {
        for tokens in ["2", "3"] {
            #expect(throws: (any Error).self) { try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--new-tokens", tokens]) }
        }
        let shortest = try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--new-tokens", "4"])
        #expect(shortest.newTokens == 4)
        let refused = try run(["bench", "decode", "--random-weights", "llama-3.1-8b", "--new-tokens", "3"])
        #expect(refused.status != 0 && refused.stderr.contains("--new-tokens ≥ 4 (two decode steps warm up untimed)"), "\(refused.stderr)")
    }

    @Test func servesTheShapeWithTheBundledTokenizer() throws {
        let serve = try Serve.parse(["--random-weights", "llama-3.2-1b", "--device", "cuda"])
        #expect(!serve.servesDemo)
        let settings = try serve.engineSettings()
        #expect(settings.randomWeights == "llama-3.2-1b" && settings.device == .cuda && settings.loraPaths.isEmpty && settings.lora == nil)
        let config = try ModelConfig.load(directory: settings.modelPath)
        let shape = try ModelConfig.named("llama-3.2-1b")
        #expect(config.hiddenSize == shape.hiddenSize && config.numLayers == shape.numLayers && config.vocabSize == shape.vocabSize)
        #expect(config.eosTokenIds == [2], "the bundled Mistral tokenizer's </s>")
        let tokenizer = try Tokenizer(directory: URL(fileURLWithPath: settings.modelPath))
        #expect(tokenizer.vocabSize == 32000)
        #expect(tokenizer.encode("Hello") == (try Tokenizer(directory: URL(fileURLWithPath: fixture("tokenizer-mistral-v1")))).encode("Hello"))
        #expect(serve.serverArgs(settings)["random_weights"] == .string("llama-3.2-1b"))

        // --tokenizer-path replaces the bundled tokenizer.
        let own = try Serve.parse(["--random-weights", "llama-3.2-1b", "--device", "cuda", "--tokenizer-path", fixture("stories260k")])
        let ownSettings = try own.engineSettings()
        #expect(try Tokenizer(directory: URL(fileURLWithPath: ownSettings.modelPath)).vocabSize == 512)
    }

    @Test func makeAdaptersTakesANamedShape() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("adapters").path
        let result = try run(["bench", "make-adapters", "--base", "llama-3.1-8b", "--count", "2", "--ranks", "8", "--target-modules", "q_proj,v_proj", "--out", out])
        #expect(result.status == 0, "\(result.stderr)")
        let adapter = try PEFTAdapter.load(path: out + "/adapter-1", base: try ModelConfig.named("llama-3.1-8b"))
        #expect(adapter.layers.count == 32 && adapter.maxRank == 8 && adapter.targetModules == [.q, .v])
    }
}
