import ArgumentParser
import Foundation
import LoomCore
import ModelFormats
import ServeBench

/// `loom bench make-adapters`: random-weight PEFT adapters for a model folder or a named shape.
struct MakeAdapters: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make-adapters",
        abstract: "Write synthetic PEFT LoRA adapters (random weights) named adapter-0 … adapter-N-1.")

    @Option(help: "A model folder (config.json) or a named shape: \(ModelConfig.knownShapeNames.joined(separator: ", ")).")
    var base: String

    @Option(help: "Number of adapters.")
    var count = 8

    @Option(help: "Ranks, comma-separated; adapter i gets the (i mod n)-th.")
    var ranks = "8,16,32,64"

    @Option(help: "lora_alpha = alpha-scale × r, so the scaling alpha / r is this value.")
    var alphaScale = 1.0

    @Option(help: "Modules, comma-separated (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, qkv_proj, gate_up_proj) or all.")
    var targetModules = "q_proj,v_proj"

    @Option(help: "Weight dtype: bf16, f16 or f32.")
    var dtype = "bf16"

    @Option(help: "The folder to write; adapters.json lists what was written.")
    var out: String

    @Option(help: "Seed of the weights.")
    var seed: UInt64 = 0

    @Option(help: "Write only N distinct weight files (a multiple of the number of ranks); the other adapters hard-link them. Saves disk for thousands of large adapters.")
    var distinctWeights: Int?

    func run() throws {
        let config = try ModelConfig.load(folderOrShapeName: base)
        let rankList = ranks.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !rankList.isEmpty, rankList.allSatisfy({ ($0 ?? 0) > 0 }) else { throw ValidationError("--ranks: give positive integers, e.g. 8,16,32,64") }
        let modules = try TargetModule.parse(targetModules.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let type: DType
        switch dtype.lowercased() {
        case "bf16", "bfloat16": type = .bf16
        case "f16", "fp16", "float16": type = .f16
        case "f32", "fp32", "float32": type = .f32
        default: throw ValidationError("--dtype must be bf16, f16 or f32")
        }
        var factory = try AdapterFactory(
            base: config, baseName: base, count: count, ranks: rankList.map { $0! }, alphaScale: alphaScale,
            targetModules: modules, dtype: type, seed: seed, outputDirectory: out)
        factory.distinctWeights = distinctWeights
        let start = Date()
        let written = try factory.writeAll()
        let bytes = written.reduce(0) { $0 + $1.bytes }
        print(String(format: "wrote %d adapters (%.1f MB) to %@ in %.2f s", written.count, Double(bytes) / 1e6, out, Date().timeIntervalSince(start)))
    }
}
