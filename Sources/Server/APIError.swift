import Engine
import Foundation
import Hummingbird
import LoomCore

/// An error answered to the client, in the JSON shape of the route that raised it.
///
/// SGLang (`http_server.py`, `serving_base.py`) uses three shapes, and so do we:
/// - `.validation`: the body is not JSON or a field has the wrong type (FastAPI's
///   `RequestValidationError` handler): `{"object": "error", "message": ..., "type": "Bad Request",
///   "param": null, "code": 400}`.
/// - `.native`: `/generate` refused the request (`_create_error_response`):
///   `{"error": {"message": ...}}`.
/// - `.openAI`: an OpenAI route refused it (`OpenAIServingBase.create_error_response`):
///   `{"object": "error", "message": ..., "type": "BadRequestError", "param": null, "code": 400}`;
///   inside an SSE stream the same object is wrapped as `{"error": {...}}`.
public struct APIError: Error, CustomStringConvertible, Sendable {
    public enum Shape: Sendable {
        case validation, native, openAI
    }

    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var shape: Shape
    /// Seconds for a `Retry-After` header (a full queue).
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status = .badRequest, _ message: String, type: String? = nil, param: String? = nil, shape: Shape) {
        self.status = status
        self.message = message
        self.type = type ?? (status == .badRequest ? "BadRequestError" : status.code >= 500 ? "InternalServerError" : "\(status.code)")
        self.param = param
        self.shape = shape
    }

    public var description: String { message }

    /// A 400 for a body that is not JSON or has a field of the wrong type.
    static func validation(_ message: String) -> APIError {
        APIError(.badRequest, message, type: "Bad Request", shape: .validation)
    }

    /// The flat error object (`ErrorResponse` in SGLang's protocol).
    var flatObject: JSON {
        ["object": "error", "message": .string(message), "type": .string(type), "param": JSON(param), "code": .int(status.code)]
    }

    public var body: JSON {
        switch shape {
        case .validation, .openAI: flatObject
        case .native: ["error": ["message": .string(message)]]
        }
    }

    /// The `data:` payload of an error that happens after an SSE stream started.
    var streamBody: JSON {
        switch shape {
        case .native: ["error": ["message": .string(message)]]
        case .validation, .openAI: ["error": flatObject]
        }
    }

    public var response: Response {
        var r = Response.json(body, status: status)
        if let retryAfter { r.headers[.retryAfter] = String(retryAfter) }
        return r
    }

    /// Turns any error raised while serving into an `APIError` of `shape`: `LoomError` and
    /// argument problems are the client's (400), a full queue or a stopping engine is a 503,
    /// anything else is ours (500).
    static func from(_ error: any Error, shape: Shape) -> APIError {
        switch error {
        case let e as APIError:
            return e
        case let e as EngineError:
            switch e {
            case .queueFull:
                var busy = APIError(.serviceUnavailable, e.description, type: "ServiceUnavailableError", shape: shape)
                busy.retryAfter = 1
                return busy
            case .shuttingDown: return APIError(.serviceUnavailable, e.description, type: "ServiceUnavailableError", shape: shape)
            case .adapterUnloaded: return APIError(.badRequest, e.description, shape: shape)
            }
        case let e as RequestTimedOut:
            return APIError(.gatewayTimeout, e.description, type: "TimeoutError", shape: shape)
        case let e as LoomError:
            switch e {
            case .outOfMemory(let m): return APIError(.serviceUnavailable, m, type: "ServiceUnavailableError", shape: shape)
            default: return APIError(.badRequest, e.description, shape: shape)
            }
        default:
            return APIError(.internalServerError, "Internal server error: \(error)", shape: shape)
        }
    }
}

extension Response {
    /// A JSON response with `Content-Type: application/json`.
    static func json(_ value: JSON, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: value.byteBuffer))
    }

    /// A plain-text response.
    static func text(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
