import Engine
import Foundation
import Hummingbird
import LoomCore

/// Typed access to the fields of a JSON request body. A field of the wrong type is a 400 in the
/// route's error shape naming the field, what it must be and what it was.
struct RequestFields {
    let object: JSONObject
    let shape: APIError.Shape

    init(_ body: JSON, shape: APIError.Shape) throws {
        guard let object = body.objectValue else {
            throw APIError(.badRequest, "The request body must be a JSON object, got \(body.kindDescription).", type: "Bad Request", shape: .validation)
        }
        self.object = object
        self.shape = shape
    }

    /// The raw value, nil when absent or null.
    subscript(key: String) -> JSON? {
        guard let v = object[key], !v.isNull else { return nil }
        return v
    }

    func wrongType(_ key: String, _ expected: String) -> APIError {
        APIError(.badRequest, "\(key) must be \(expected), got \(object[key]?.kindDescription ?? "nothing").", type: "Bad Request", shape: .validation)
    }

    func string(_ key: String) throws -> String? {
        guard let v = self[key] else { return nil }
        guard let s = v.stringValue else { throw wrongType(key, "a string") }
        return s
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = self[key] else { return nil }
        guard let b = v.boolValue else { throw wrongType(key, "a boolean") }
        return b
    }

    func int(_ key: String) throws -> Int? {
        guard let v = self[key] else { return nil }
        guard let i = v.intValue else { throw wrongType(key, "an integer") }
        return i
    }

    func double(_ key: String) throws -> Double? {
        guard let v = self[key] else { return nil }
        guard let d = v.doubleValue else { throw wrongType(key, "a number") }
        return d
    }

    /// A string or a list of strings (`stop`).
    func strings(_ key: String) throws -> [String]? {
        guard let v = self[key] else { return nil }
        if let s = v.stringValue { return [s] }
        guard let items = v.arrayValue, items.allSatisfy({ $0.stringValue != nil }) else {
            throw wrongType(key, "a string or a list of strings")
        }
        return items.map { $0.stringValue! }
    }

    func ints(_ key: String) throws -> [Int]? {
        guard let v = self[key] else { return nil }
        guard let items = v.arrayValue, items.allSatisfy({ $0.intValue != nil }) else {
            throw wrongType(key, "a list of integers")
        }
        return items.map { $0.intValue! }
    }
}

extension Request {
    /// The body parsed as JSON (at most `limit` bytes); malformed JSON is a 400 validation error.
    func jsonBody(limit: Int = 64 << 20) async throws -> JSON {
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: limit)
        } catch {
            throw APIError(.contentTooLarge, "The request body is larger than \(limit) bytes.", type: "Bad Request", shape: .validation)
        }
        guard buffer.readableBytes > 0 else {
            throw APIError.validation("The request body is empty; a JSON object is required.")
        }
        do {
            return try JSON.parse(buffer.readableBytesView)
        } catch let e as JSONSyntaxError {
            throw APIError.validation("JSON decode error: \(e.description).")
        }
    }

    /// SGLang's check on OpenAI routes: the body must be declared as JSON.
    func requireJSONContentType() throws {
        let mediaType = headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        guard mediaType == "application/json" else {
            throw APIError.validation("Unsupported Media Type: Only 'application/json' is allowed")
        }
    }
}

extension SamplingParams {
    /// Decodes `sampling_params` with the engine's own decoder (SGLang's names, `null` as default);
    /// a type error becomes a 400 naming the field.
    static func decode(_ value: JSON?, shape: APIError.Shape) throws -> SamplingParams {
        guard let value, !value.isNull else { return SamplingParams() }
        guard value.objectValue != nil else {
            throw APIError(.badRequest, "sampling_params must be an object, got \(value.kindDescription).", type: "Bad Request", shape: .validation)
        }
        do {
            return try JSONDecoder().decode(SamplingParams.self, from: Data(value.serialized()))
        } catch let e as LoomError {
            throw APIError(.badRequest, e.description, type: "Bad Request", shape: .validation)
        } catch {
            throw APIError(.badRequest, "sampling_params is not valid: \(error)", type: "Bad Request", shape: .validation)
        }
    }
}
