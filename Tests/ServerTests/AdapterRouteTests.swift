import Engine
import Foundation
import Testing

@testable import Server

/// `/load_lora_adapter` and `/unload_lora_adapter`: `{success, error_message, loaded_adapters}`.
@Suite struct AdapterRouteTests {
    @Test func loadUseUnloadAndReplaceUnderTheSameName() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let load = try await server.post("/load_lora_adapter", ["lora_name": "poet", "lora_path": "/adapters/poet-v1"])
            #expect(load.status == 200)
            #expect(try load.json() == [
                "success": true, "error_message": nil,
                "loaded_adapters": ["sql": "/adapters/sql", "python": "/adapters/python", "poet": "/adapters/poet-v1"],
            ])
            let first = try await server.post("/generate", ["input_ids": [1, 9], "lora_path": "poet", "sampling_params": ["max_new_tokens": 3]])
            let uid1 = try #require(service.adapters?.lookup("poet")?.uid)
            #expect(try first.json()["output_ids"] == JSON(service.expectedTokens(prompt: [1, 9], adapterUID: uid1, count: 3)))

            let unload = try await server.post("/unload_lora_adapter", ["lora_name": "poet"])
            #expect(unload.status == 200)
            #expect(try unload.json()["loaded_adapters"] == ["sql": "/adapters/sql", "python": "/adapters/python"])
            #expect(try await server.post("/generate", ["input_ids": [1, 9], "lora_path": "poet"]).status == 400)

            #expect(try await server.post("/load_lora_adapter", ["lora_name": "poet", "lora_path": "/adapters/poet-v2"]).status == 200)
            let uid2 = try #require(service.adapters?.lookup("poet")?.uid)
            #expect(uid2 != uid1)
            let second = try await server.post("/generate", ["input_ids": [1, 9], "lora_path": "poet", "sampling_params": ["max_new_tokens": 3]])
            #expect(try second.json()["output_ids"] == JSON(service.expectedTokens(prompt: [1, 9], adapterUID: uid2, count: 3)))
            #expect(try second.json()["output_ids"] != first.json()["output_ids"])
        }
    }

    @Test func corruptAndIncompatibleAdaptersAre400sAndTheServerKeepsServing() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let corrupt = try await server.post("/load_lora_adapter", ["lora_name": "bad", "lora_path": "/adapters/corrupt"])
            #expect(corrupt.status == 400)
            let j = try corrupt.json()
            #expect(j["success"] == false)
            #expect(j["error_message"]?.stringValue?.contains("adapter_model.safetensors") == true)
            #expect(j["loaded_adapters"] == ["sql": "/adapters/sql", "python": "/adapters/python"])

            let big = try await server.post("/load_lora_adapter", ["lora_name": "big", "lora_path": "/adapters/rank999"])
            #expect(big.status == 400)
            #expect(try big.json()["error_message"]?.stringValue?.contains("incompatible") == true)

            let dup = try await server.post("/load_lora_adapter", ["lora_name": "sql", "lora_path": "/elsewhere"])
            #expect(dup.status == 400)
            #expect(try dup.json()["error_message"]?.stringValue?.contains("already loaded") == true)

            let missing = try await server.post("/unload_lora_adapter", ["lora_name": "ghost"])
            #expect(missing.status == 400)
            #expect(try missing.json()["success"] == false)

            let r = try await server.post("/generate", ["text": ["a", "b"], "lora_path": ["sql", "python"], "sampling_params": ["max_new_tokens": 1]])
            #expect(r.status == 200)
        }
    }

    @Test func pinnedLoadAndThePinnedLimit() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            for i in 0..<3 {
                let r = try await server.post("/load_lora_adapter", ["lora_name": .string("p\(i)"), "lora_path": .string("/adapters/p\(i)"), "pinned": true])
                #expect(r.status == 200)
            }
            #expect(service.adapters?.lookup("p0")?.pinned == true)
            let over = try await server.post("/load_lora_adapter", ["lora_name": "p3", "lora_path": "/adapters/p3", "pinned": true])
            #expect(over.status == 400)
            #expect(try over.json()["error_message"]?.stringValue?.contains("pinned") == true)
        }
    }

    @Test func missingFieldsAreValidationErrors() async throws {
        try await withServer(try makeService()) { server in
            let r = try await server.post("/load_lora_adapter", ["lora_path": "/x"])
            #expect(r.status == 400)
            #expect(try r.json()["message"]?.stringValue == "lora_name is required.")
            let t = try await server.post("/load_lora_adapter", ["lora_name": "x", "lora_path": "/x", "pinned": "yes"])
            #expect(try t.json()["message"]?.stringValue?.contains("pinned must be a boolean") == true)
        }
    }
}
