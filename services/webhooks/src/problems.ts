// application/problem+json answers, as every linkflow API gives them.
export interface FieldError {
  field: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: FieldError[];
}

const TITLES: Record<number, [string, string]> = {
  400: ["bad-request", "Bad Request"],
  401: ["unauthorized", "Unauthorized"],
  403: ["forbidden", "Forbidden"],
  404: ["not-found", "Not Found"],
  405: ["method-not-allowed", "Method Not Allowed"],
  413: ["content-too-large", "Content Too Large"],
  415: ["unsupported-media-type", "Unsupported Media Type"],
  422: ["unprocessable-content", "Unprocessable Content"],
  429: ["too-many-requests", "Too Many Requests"],
  500: ["internal-server-error", "Internal Server Error"],
  503: ["service-unavailable", "Service Unavailable"],
};

export function problem(status: number, detail: string, errors?: FieldError[]): Problem {
  const [slug, title] = TITLES[status] ?? ["error", "Error"];
  const p: Problem = { type: `https://linkflow.dev/problems/${slug}`, title, status, detail };
  if (errors) p.errors = errors;
  return p;
}

export function invalid(errors: FieldError[]): Problem {
  return problem(422, errors.map((e) => `${e.field}: ${e.message}`).join("; "), errors);
}
