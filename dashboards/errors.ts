// Every error the dashboards answer with: one catalogue, a stable code for programs, a message for people.
import { AppError } from '../common/http.js';

const CATALOGUE = {
  SIGNIN_REQUIRED: [401, 'Sign in first.'],
  SIGNIN_FAILED: [401, 'That email and password do not match an account.'],
  SIGNIN_LIMITED: [429, 'Too many failed sign-ins; wait a few minutes and try again.'],
  CSRF_INVALID: [403, 'The form is missing its security token or it is stale; reload the page and try again.'],
  ROLE_REQUIRED: [403, 'Your role does not allow this; ask an admin.'],
  ACCOUNT_EXISTS: [409, 'An account with that email exists already.'],
  NOTEBOOK_NOT_FOUND: [404, 'No such notebook among yours.'],
  SALE_NOT_FOUND: [404, 'No such sale.'],
  SALE_CORE_REFUSED: [400, 'The sale core refused the request.'],
  SALE_CORE_UNAVAILABLE: [503, 'The sale core did not answer; try again shortly.'],
  WAREHOUSE_REFUSED: [400, 'The warehouse refused the query.'],
  WAREHOUSE_UNAVAILABLE: [503, 'The warehouse did not answer; try again shortly.'],
  OFFER_JOB_UNAVAILABLE: [503, 'Offer jobs are not available in this build.'],
} as const;

export type DashboardErrorCode = keyof typeof CATALOGUE;

export function dashboardError(code: DashboardErrorCode, message?: string, headers: Record<string, string> = {}): AppError {
  const [status, fallback] = CATALOGUE[code];
  return new AppError(code, status, message ?? fallback, headers);
}
