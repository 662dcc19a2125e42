/**
 * The dsn stage (Postfix bounce/defer/trace): which recipient states call for a
 * delivery status notification (`notify.ts`, pure) and the RFC 3464 report
 * message for them (`report.ts`). Other stages import this file only.
 */
export {
  reportsDue,
  groupByAction,
  markDelayWarned,
  isDelayWarned,
  type DsnAction,
  type ReportItem,
  type DelayTracked,
  type NotifyOptions,
} from './notify.ts';
export { queueOwedReports, type ReportContext } from './enqueue.ts';
export { renderReport, statusCode, rfc5322Date, type ReportInput, type RenderedReport } from './report.ts';
