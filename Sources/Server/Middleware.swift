import LoomCore
import Foundation
import Hummingbird

/// Renders every error as JSON: `APIError` in its route's shape, the router's 404/405 as
/// FastAPI's `{"detail": ...}`, anything else as a 500 in SGLang's flat error shape.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            return e.response
        } catch let e as HTTPError {
            let detail = e.status == .notFound ? "Not Found" : e.status == .methodNotAllowed ? "Method Not Allowed" : (e.body ?? e.status.reasonPhrase)
            return Response.json(["detail": .string(detail)], status: e.status)
        } catch {
            context.logger.error("unhandled error", metadata: ["error": .string("\(error)")])
            return APIError(.internalServerError, "Internal server error: \(error)", shape: .openAI).response
        }
    }
}

/// `--api-key` and `--admin-api-key`: requests need `Authorization: Bearer <key>`, except
/// `OPTIONS`, `/health*` and `/metrics`, which SGLang leaves open for probes and scrapers. With an
/// admin key, the admin routes (adapter load and unload, cache flush) need that key and no other;
/// without one they need the API key like every route. Keys are compared in constant time.
/// Refusals are SGLang's `{"error": "Unauthorized"}` with 401.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let apiKey: String?
    let adminAPIKey: String?

    static let adminPaths: Set<String> = ["/load_lora_adapter", "/unload_lora_adapter", "/flush_cache"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if request.method == .options || path.hasPrefix("/health") || path.hasPrefix("/metrics") {
            return try await next(request, context)
        }
        let isAdmin = Self.adminPaths.contains(path)
        guard let key = isAdmin ? (adminAPIKey ?? apiKey) : apiKey else { return try await next(request, context) }
        guard Self.constantTimeEquals(request.headers[.authorization] ?? "", "Bearer \(key)") else {
            return Response.json(["error": "Unauthorized"], status: .unauthorized)
        }
        return try await next(request, context)
    }

    /// Compares every byte whatever the first difference, so the time taken does not reveal how
    /// much of a guess was right (only the expected length, which is not secret).
    static func constantTimeEquals(_ given: String, _ expected: String) -> Bool {
        let a = Array(given.utf8), b = Array(expected.utf8)
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in b.indices { diff |= b[i] ^ (i < a.count ? a[i] : ~b[i]) }
        return diff == 0
    }
}

/// Logs each request with its route, status and duration at debug level.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        context.logger.debug(
            "\(request.method) \(request.uri.path) \(response.status.code)",
            metadata: ["duration_ms": .stringConvertible(Int((ContinuousClock.now - start).seconds * 1000))])
        return response
    }
}
