// CloudFront Function (cloudfront-js-2.0), viewer response of /blobs/*.
//
// The mirror's resolve redirect points at an immutable blob URL and carries the Hub
// metadata in its query string (?commit=<40 hex>&etag=<git blob id or sha256>).
// huggingface_hub follows same-host redirects on HEAD and reads X-Repo-Commit and
// X-Linked-Etag from the final response, which here comes from S3; this function puts
// them there. Values are checked to be hex so nothing else can be injected, and S3's
// own headers (its ETag is an MD5, not the Hub's) do not reach clients.
var COMMIT = /^[0-9a-f]{40}$/;
var ETAG = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

function handler(event) {
    var response = event.response;
    var headers = response.headers;
    var query = event.request.querystring;
    var commit = query.commit ? query.commit.value : "";
    var etag = query.etag ? query.etag.value : "";
    delete headers["x-amz-server-side-encryption"];
    delete headers["x-amz-version-id"];
    delete headers["x-amz-meta-etag"];
    if (COMMIT.test(commit)) {
        headers["x-repo-commit"] = { value: commit };
    }
    if (ETAG.test(etag)) {
        headers["x-linked-etag"] = { value: '"' + etag + '"' };
        headers["etag"] = { value: '"' + etag + '"' };
    } else {
        delete headers["etag"];
    }
    return response;
}
