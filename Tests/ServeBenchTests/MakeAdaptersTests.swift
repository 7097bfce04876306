import Foundation
import LoomCore
import ModelFormats
import Testing

@testable import ServeBench

@Suite struct MakeAdaptersTests {
    @Test func adaptersReadBackThroughPEFTAdapterLoad() throws {
        let dir = try temporaryFolder("adapters")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try ModelConfig.load(folderOrShapeName: fixture("stories260k"))
        let factory = try AdapterFactory(
            base: base, baseName: "stories260k", count: 5, ranks: [8, 16, 32, 64], alphaScale: 0.5,
            targetModules: try TargetModule.parse(["all"]), dtype: .bf16, seed: 3, outputDirectory: dir)
        let written = try factory.writeAll()
        #expect(written.map(\.name) == ["adapter-0", "adapter-1", "adapter-2", "adapter-3", "adapter-4"])
        #expect(written.map(\.rank) == [8, 16, 32, 64, 8])
        for w in written {
            let adapter = try PEFTAdapter.load(path: w.path, base: base)
            #expect(adapter.maxRank == w.rank)
            #expect(adapter.targetModules == Set(TargetModule.allCases))
            #expect(adapter.config.alpha == Float(w.rank) / 2)
            for layer in adapter.layers {
                #expect(layer.count == 7)
                for (module, weights) in layer {
                    let (out, inFeatures) = module.shape(base)
                    #expect(weights.rank == w.rank && weights.scaling == 0.5)
                    #expect(weights.a.count == w.rank * inFeatures && weights.b.count == out * w.rank)
                    let aBound = 1 / Float(inFeatures).squareRoot(), bBound = 1 / Float(w.rank).squareRoot()
                    #expect(weights.a.allSatisfy { abs($0) <= aBound * 1.01 })
                    #expect(weights.b.allSatisfy { abs($0) <= bBound * 1.01 })
                    #expect(Set(weights.a).count > min(weights.a.count / 8, 256), "weights look random")
                }
            }
        }
        // Different adapters get different weights; the same seed gives the same files.
        let a0 = try PEFTAdapter.load(path: written[0].path, base: base), a4 = try PEFTAdapter.load(path: written[4].path, base: base)
        #expect(a0.layers[0][.q]!.a != a4.layers[0][.q]!.a)
        let again = try factory.write(0)
        #expect(try PEFTAdapter.load(path: again.path, base: base).layers[0][.q]!.a == a0.layers[0][.q]!.a)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/adapters.json"))) as! [String: Any]
        #expect((manifest["adapters"] as? [Any])?.count == 5)
    }

    @Test func namedShapesAndHalfPrecision() throws {
        let dir = try temporaryFolder("shapes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shape = try ModelConfig.named("llama-3.2-1b")
        #expect(shape.hiddenSize == 2048 && shape.intermediateSize == 8192 && shape.numLayers == 16 && shape.headDim == 64 && shape.numKVHeads == 8)
        #expect(try ModelConfig.named("llama-3.1-8b").qkvSize == 4096 + 2 * 1024)
        #expect(try ModelConfig.named("qwen2.5-7b").vocabSize == 152_064)
        #expect(throws: LoomError.self) { try ModelConfig.named("llama-9") }
        do {
            _ = try ModelConfig.named("gpt-5")
        } catch {
            #expect("\(error)".contains("llama-3.1-8b, llama-3.2-1b, qwen2.5-7b"))
        }
        // A narrow slice of the 1B shape keeps the test small: 2 layers, f16, q and v.
        var small = shape
        small.numLayers = 2
        let factory = try AdapterFactory(
            base: small, baseName: "llama-3.2-1b", count: 2, ranks: [4], alphaScale: 1,
            targetModules: [.q, .v], dtype: .f16, seed: 1, outputDirectory: dir)
        let written = try factory.writeAll()
        let adapter = try PEFTAdapter.load(path: written[1].path, base: small)
        #expect(adapter.targetModules == [.q, .v] && adapter.maxRank == 4)
        #expect(adapter.layers[1][.v]!.b.count == 512 * 4)
        #expect(written[1].bytes > 2 * 2 * 4 * (2048 + 2048 + 2048 + 512))
    }

    @Test func distinctWeightsAreHardLinkedBetweenAdaptersOfTheSameRank() throws {
        let dir = try temporaryFolder("linked")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try ModelConfig.load(directory: fixture("stories260k"))
        var factory = try AdapterFactory(
            base: base, baseName: "stories260k", count: 10, ranks: [8, 16], alphaScale: 1,
            targetModules: [.q], dtype: .bf16, seed: 0, outputDirectory: dir)
        factory.distinctWeights = 4
        let written = try factory.writeAll()
        #expect(written.map(\.rank) == [8, 16, 8, 16, 8, 16, 8, 16, 8, 16])
        for w in written { #expect(try PEFTAdapter.load(path: w.path, base: base).maxRank == w.rank) }
        let inode = { (i: Int) in try FileManager.default.attributesOfItem(atPath: written[i].path + "/adapter_model.safetensors")[.systemFileNumber] as? Int }
        #expect(try inode(9) == inode(1) && inode(6) == inode(2) && inode(1) != inode(3))
        factory.distinctWeights = 3
        #expect(throws: LoomError.self) { try factory.writeAll() }
    }

    @Test func writesAThousandSmallAdapters() throws {
        let dir = try temporaryFolder("many")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try ModelConfig.load(directory: fixture("stories260k"))
        let written = try AdapterFactory(
            base: base, baseName: "stories260k", count: 1000, ranks: [8, 16, 32, 64], alphaScale: 1,
            targetModules: [.q, .v], dtype: .bf16, seed: 0, outputDirectory: dir).writeAll()
        #expect(written.count == 1000)
        #expect(try PEFTAdapter.load(path: written[999].path, base: base).maxRank == 64)
    }
}
